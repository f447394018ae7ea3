"Round trips of medsft.model that would clutter the docs: the download CLI, offline failure, loading a tiny folder from disk alone."
import json, os, subprocess, sys

import pytest

from fastcore.test import test_eq as eq

from conftest import cli
from medsft.commands import medsft_download
from medsft.model import IM_END_ID, PAD_ID, embedded_tokenizer_dir, tiny_qwen3

OFFLINE = {"MODELSCOPE_DOMAIN": "http://127.0.0.1:9"}  # a closed port: never starts a real download, even with network


def _run(*args, env=None, timeout=120):
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def test_download_offline_fails_fast(tmp_path, monkeypatch):
    "In this process (`conftest.cli`); the command's --help and entry point: test_cli, test_package."
    for k, v in OFFLINE.items(): monkeypatch.setenv(k, v)
    r = cli(medsft_download, "--local_dir", str(tmp_path / "m"))
    eq(r.returncode, 2)
    lines = r.stderr.strip().splitlines()
    eq(len(lines), 1)
    assert lines[0].startswith("medsft_download: error: cannot reach ModelScope"), r.stderr
    assert not (tmp_path / "m").exists()


def test_download_rejects_a_path(tmp_path, monkeypatch):
    for k, v in OFFLINE.items(): monkeypatch.setenv(k, v)
    r = cli(medsft_download, "--model_id", "./Qwen")
    eq(r.returncode, 2)
    assert "not a ModelScope id" in r.stderr, r.stderr


def test_tiny_folder_loads_from_disk_alone(tmp_path):
    folder = tiny_qwen3(tmp_path / "tiny", num_hidden_layers=1)
    code = f"""
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
m = AutoModelForCausalLM.from_pretrained({str(folder)!r})
t = AutoTokenizer.from_pretrained({str(folder)!r})
ids = t.apply_chat_template([{{"role": "user", "content": "高血压如何饮食？"}}], add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = m.generate(**ids, max_new_tokens=3, do_sample=False)
print(json.dumps(dict(ids=t("高血压如何饮食？")["input_ids"], eos=m.generation_config.eos_token_id, pad=t.pad_token_id,
                      layers=m.config.num_hidden_layers, new=out.shape[1] - ids["input_ids"].shape[1])))
"""
    r = _run(sys.executable, "-c", code, env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    eq(r.returncode, 0)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    eq(res["ids"], [109155, 100007, 104579, 11319])
    eq(res["eos"][0], IM_END_ID)
    eq(res["pad"], PAD_ID)
    eq(res["layers"], 1)
    assert 1 <= res["new"] <= 3
    eq(sorted(p.name for p in folder.iterdir()), ["chat_template.jinja", "config.json", "generation_config.json",
                                                 "model.safetensors", "tokenizer.json", "tokenizer_config.json"])


@pytest.mark.slow  # builds the embedded tokenizer twice in a cache of its own (seconds each)
def test_damaged_embedded_tokenizer_cache_is_rebuilt(tmp_path, monkeypatch):
    "Issue 22 §4: a truncated tokenizer.json in the cached embedded tokenizer: a warning naming the folder, a rebuild."
    from transformers import AutoTokenizer
    monkeypatch.setenv("MEDSFT_CACHE", str(tmp_path))
    folder = embedded_tokenizer_dir()
    want = AutoTokenizer.from_pretrained(folder)("高血压如何饮食？")["input_ids"]
    text = (folder / "tokenizer.json").read_text(encoding="utf-8")
    (folder / "tokenizer.json").write_text(text[:len(text) // 2], encoding="utf-8")
    with pytest.warns(UserWarning, match=f"{folder}: damaged cache folder"):
        eq(embedded_tokenizer_dir(), folder)
    eq((folder / "tokenizer.json").read_text(encoding="utf-8"), text)
    eq(AutoTokenizer.from_pretrained(folder)("高血压如何饮食？")["input_ids"], want)
