"""Issue 22 §5: guards for kinds of bugs other SFT tools have shipped. Some pass on the code they were written against;
they are here so that nothing regresses silently: LoRA under gradient checkpointing, the stop token of every folder
written from a base model, streaming multi-byte characters, Chinese under a non-UTF-8 console, `</think>` in
completions and fed-back replies, and resumed evaluations that never mix settings."""
import json, os, subprocess, sys
from pathlib import Path

import pytest
from fastcore.test import test_eq as eq
from safetensors.torch import load_file
from transformers import GenerationConfig, LogitsProcessorList

from conftest import TRAINED_KW, cli
from medsft.chat import parse_response, stream_parts
from medsft.commands import medsft_eval
from medsft.data import normalize_rows, tokenize_sft
from medsft.files import read_jsonl, write_jsonl
from medsft.inference import get_predictor
from medsft.model import IM_END_ID, PAD_ID, THINK_END_ID, THINK_START_ID, TINY, tiny_qwen3
from medsft.testing import ForceReply

BIN = Path(sys.executable).parent
QUESTION = "高血压如何饮食？"


def _lora_b(folder:Path)->dict:
    return {k: v for k, v in load_file(folder / "adapter_model.safetensors").items() if "lora_B" in k}


@pytest.mark.slow  # a LoRA run (seconds)
def test_lora_with_gradient_checkpointing_moves_every_lora_b(trained, tmp_path):
    "PEFT initialises every lora_B to zero: one that is still zero after training got no gradient."
    import yaml
    from medsft.train_lora import train_lora
    out = train_lora(model=str(trained["full"]), output_dir=tmp_path / "lora", learning_rate=1e-2,
                     activation_checkpointing=True, **TRAINED_KW)
    run = yaml.safe_load((tmp_path / "lora" / "train_config.yaml").read_text(encoding="utf-8"))
    assert True in (run.get("activation_checkpointing"), run.get("gradient_checkpointing")), run
    b = _lora_b(Path(out))
    assert b, "no lora_B weights saved"
    still = [k for k, v in b.items() if not v.abs().sum() > 0]
    assert not still, f"{len(still)} of {len(b)} lora_B never moved, e.g. {still[:3]}"


@pytest.mark.slow  # full SFT, LoRA and a merge from a base model of its own (seconds each)
def test_every_written_folder_stops_on_im_end(tmp_path):
    "A base model whose generation_config.json stops only on <|endoftext|> (Qwen3 base models): medsft's folders stop on <|im_end|>."
    from medsft.train_full import train_full
    from medsft.train_lora import merge_adapter, train_lora
    base = tiny_qwen3(tmp_path / "base")
    gen = json.loads((base / "generation_config.json").read_text(encoding="utf-8"))
    (base / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": PAD_ID}), encoding="utf-8")
    full = train_full(model=str(base), output_dir=tmp_path / "full", **TRAINED_KW)
    lora = train_lora(model=str(base), output_dir=tmp_path / "lora", **TRAINED_KW)
    merged = merge_adapter(lora, tmp_path / "merged")
    folders = [full, lora, merged, *Path(full).glob("checkpoint-*"), *Path(lora).glob("checkpoint-*")]
    assert len(folders) >= 5, folders
    for f in folders:
        eos = GenerationConfig.from_pretrained(f).eos_token_id
        assert IM_END_ID in (eos if isinstance(eos, list) else [eos]), (f, eos)


def test_streaming_never_splits_a_character():
    "A forced reply of emoji and rare CJK characters (several tokens each), cut at every token: no piece holds half a character."
    pred = get_predictor(TINY)
    tok = pred.tokenizer
    text = "<think>\n𪚥龘🩺\n</think>\n\n多喝水😷，𠀀💊。"
    reply = tok.encode(text, add_special_tokens=False) + [IM_END_ID]
    assert any(len(tok.encode(c, add_special_tokens=False)) > 1 for c in "𪚥龘🩺😷𠀀💊")  # the case under test
    for k in range(1, len(reply) + 1):
        pieces = list(pred.stream(QUESTION, max_new_tokens=k, do_sample=False,
                                  logits_processor=LogitsProcessorList([ForceReply([reply])])))
        whole = tok.decode(reply[:k], skip_special_tokens=True)
        eq("".join(pieces), whole)  # the stream adds and loses nothing
        assert not any("\ufffd" in p for p in pieces[:-1]), (k, pieces)  # only a cut end may hold half of one
        if k == len(reply): assert "\ufffd" not in whole and pred.last_stream["stopped"]
        parts = {"think": "", "answer": ""}
        for part, piece in stream_parts(pieces):
            parts[part] = "" if piece is None else parts[part] + piece
        now = parse_response(whole)
        eq((parts["think"], parts["answer"]), (now["think"], now["answer"]))


@pytest.mark.slow  # two fresh Pythons, one a short training run: the console is the subject
def test_train_and_eval_write_chinese_on_an_ascii_console(tmp_path):
    "PYTHONIOENCODING=ascii LANG=C: stdout is still UTF-8 Chinese, files are UTF-8, no UnicodeEncodeError."
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "LANG": "C", "LC_ALL": "C"}
    val = write_jsonl([{"question": QUESTION, "answer": "少盐饮食。"}], tmp_path / "中文 val.jsonl")
    run = lambda *a: subprocess.run([str(BIN / a[0]), *map(str, a[1:])], capture_output=True, env=env, timeout=600)
    t = run("medsft_train", "--model", TINY, "--train-file", "sample", "--val-file", "", "--max-train-rows", 8,
            "--max-length", 256, "--max-steps", 1, "--num-predict", 1, "--no-progress", "--swanlab-mode", "disabled",
            "--output-dir", tmp_path / "输出")
    assert t.returncode == 0, t.stderr.decode("utf-8", "replace")[-2000:]
    out = t.stdout.decode("utf-8")  # not ascii, not mangled: UTF-8
    assert "输出" in out and "\ufffd" not in out, out[-2000:]
    assert "你是一个医学专家" in (tmp_path / "输出" / "train_config.yaml").read_text(encoding="utf-8")
    e = run("medsft_eval", "-c", TINY, "-f", val, "-m", 4, "-o", tmp_path / "评测", "--greedy", "--json")
    assert e.returncode == 0, e.stderr.decode("utf-8", "replace")[-2000:]
    eq(json.loads(e.stdout.decode("utf-8"))["val_file"], str(val))
    eq(read_jsonl(tmp_path / "评测" / "predictions.jsonl")[0]["question"], QUESTION)


def test_closing_think_only_completion_tokenizes_to_one_think_end():
    "A prompt/completion row whose completion holds only `</think>` (the opener was in the prompt): one <think>, one </think>."
    tok = get_predictor(TINY).tokenizer
    rows = normalize_rows([{"prompt": QUESTION, "completion": "先看血压水平。\n</think>\n\n少盐饮食。"}])
    eq((rows[0]["think"], rows[0]["answer"]), ("先看血压水平。", "少盐饮食。"))
    ids = tokenize_sft(rows[0], tok)["input_ids"]
    eq((ids.count(THINK_START_ID), ids.count(THINK_END_ID), ids.count(IM_END_ID)), (1, 1, 3))


@pytest.mark.parametrize("think", [True, False])
def test_a_models_reply_fed_back_gives_identical_tokens(think):
    "The tokens the model generated (prompt + reply + <|im_end|>) are exactly what training on its parsed reply feeds it."
    pred = get_predictor(TINY)
    tok = pred.tokenizer
    body = "<think>\n先看血压水平。\n</think>\n\n少盐饮食，多运动。" if think else "少盐饮食，多运动。"
    reply = tok.encode(body, add_special_tokens=False) + [IM_END_ID]
    rec = pred.generate([QUESTION], max_new_tokens=len(reply) + 2, do_sample=False, enable_thinking=think,
                        logits_processor=LogitsProcessorList([ForceReply([reply])]))[0]
    assert rec["stopped"], rec
    prompt = tok(pred.prompt(QUESTION, enable_thinking=think), add_special_tokens=False)["input_ids"]
    ex = tokenize_sft(dict(question=QUESTION, think=rec["think"], answer=rec["answer"]), tok,
                      empty_think="label" if think else "prompt")
    eq(ex["input_ids"], prompt + reply)
    eq([t for t, l in zip(ex["input_ids"], ex["labels"]) if l != -100], reply)


def test_resumed_eval_never_mixes_settings(tmp_path):
    "An interrupted medsft_eval resumed with another --batch-size, or sampling instead of greedy, regenerates every row."
    val = write_jsonl([{"question": f"{QUESTION}{i}", "answer": "少盐饮食。"} for i in range(4)], tmp_path / "v.jsonl")
    out = tmp_path / "eval"
    def run(*flags):
        r = cli(medsft_eval, "-c", TINY, "-f", val, "-m", 3, "-o", out, "--json", *flags)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)
    def interrupt():  # a run killed after two of four answers
        p = out / "predictions.jsonl"
        p.write_text("".join(p.read_text(encoding="utf-8").splitlines(True)[:2]), encoding="utf-8")
    first = ["-b", "2", "--greedy"]
    eq(run(*first)["answered_now"], 4)
    interrupt()
    eq(run(*first)["answered_now"], 2)  # the same settings resume: the guard below can fail
    for other in (["-b", "4", "--greedy"], ["-b", "2", "--seed", "1"], ["-b", "2", "--seed", "2"]):
        interrupt()
        eq(run(*other)["answered_now"], 4)
        rows = read_jsonl(out / "predictions.jsonl")
        eq((len(rows), len({r["run"] for r in rows})), (4, 1))
