"""Supervised fine-tuning of Qwen3 on Chinese medical question/think/answer data."""
__version__ = "0.1.0"
