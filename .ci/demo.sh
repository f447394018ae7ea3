#!/usr/bin/env bash
# `make demo`: the whole pipeline on the embedded default, as a user runs it from the shell:
# built-in sample rows -> train/val files -> full SFT of a tiny Qwen3 -> LoRA on top -> merge -> predictions.
# The tiny model starts from random weights and trains for about two minutes on 21 rows, so its answers are
# not medicine: the demo shows the plumbing (a think block, an answer, stopping on <|im_end|>), not a useful model.
# Each prediction's last line says what was measured: whether a think block was written and closed by </think>,
# and whether generation stopped on <|im_end|> or at the 300-token budget.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-output/demo}
export SWANLAB_MODE=${SWANLAB_MODE:-offline} TOKENIZERS_PARALLELISM=false HF_HUB_DISABLE_PROGRESS_BARS=1
rm -rf "$out"
step() { printf '\n== %s\n' "$*"; }

step "1/5 data: the built-in sample rows, split 90/10 with seed 42 (medsft_data)"
medsft_data --source sample --output-dir "$out/data"

step "2/5 base model: a tiny random Qwen3 with the real Qwen3 tokenizer (medsft.model.tiny_qwen3)"
# untied embeddings: a 64-wide tiny model learns the format much faster so (see nbs/01_model.ipynb)
python -c "from medsft.model import tiny_qwen3; print(tiny_qwen3('$out/base', tie_word_embeddings=False))"

common=(--train-file "$out/data/train.jsonl" --val-file "$out/data/val.jsonl" --max-length 512
        --per-device-train-batch-size 4 --gradient-accumulation-steps 1 --no-activation-checkpointing
        --lr-scheduler-type constant --logging-steps 20 --num-predict 0)
step "3/5 full-parameter SFT (medsft_train)"
medsft_train "${common[@]}" --model "$out/base" --output-dir "$out/full" --max-steps 80 --learning-rate 3e-3 \
  --eval-steps 40 --save-steps 40

step "4/5 LoRA SFT on top of that model (medsft_train_lora), then merge it (medsft_merge)"
medsft_train_lora "${common[@]}" --model "$out/full" --output-dir "$out/lora" --max-steps 20 --learning-rate 3e-3 \
  --eval-steps 20 --save-steps 20
medsft_merge --adapter-dir "$out/lora" --output-dir "$out/merged"

step "5/5 predictions of the merged model, greedy (medsft.inference.predict)"
python - "$out/merged" <<'PY'
import sys
from medsft.inference import predict
from medsft.train_full import show_prediction  # the lines a training run prints for its predictions
questions = ["高血压患者饮食上要注意什么？", "我血糖偏高，三餐如何安排？", "感冒发烧时可以吃什么？"]
for q, r in zip(questions, predict(questions, checkpoint=sys.argv[1], max_new_tokens=300, do_sample=False, return_dict=True)):
    print(show_prediction(dict(r, question=q)), end="\n\n")
PY
step "done: models in $out/{base,full,lora,merged}; SwanLab logs (offline) in $out/full/swanlog"
