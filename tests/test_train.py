"""CLI round trips of medsft.train_full and medsft.train_lora: --help, train, resume, refuse, LoRA -> merge -> predict.
The commands run in this process (`conftest.cli`); only the kill-and-resume test starts processes (it kills them),
and it is in the slow tier."""
import contextlib, json, os, re, shutil, subprocess, sys
from pathlib import Path

import pytest
import torch
from fastcore.test import test_eq as eq

from conftest import cli
from medsft.cli import parse_command
from medsft.commands import medsft_merge, medsft_predict
from medsft.data import medsft_data
from medsft.files import read_jsonl, write_jsonl
from medsft.testing import shared_dir
from medsft.model import IM_END_ID, TINY, load_model_and_tokenizer, peft_quiet
from medsft.train_full import medsft_train
from medsft.train_lora import medsft_train_lora

COMMANDS = dict(medsft_data=medsft_data, medsft_train=medsft_train, medsft_train_lora=medsft_train_lora, medsft_merge=medsft_merge,
                medsft_predict=medsft_predict)

ENV = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "SWANLAB_MODE": "disabled"}
BIN = Path(sys.executable).parent
# a handful of optimizer steps on the embedded tiny Qwen3 and 8 of the built-in sample rows
SMALL = ["--model", TINY, "--train-file", "sample", "--val-file", "", "--max-train-rows", "8", "--max-length", "256",
         "--save-steps", "1", "--eval-steps", "2", "--logging-steps", "1", "--num-predict", "1", "--max-new-tokens", "8",
         "--no-progress", "--swanlab-mode", "disabled"]


def run(cmd, *args, cwd=None, ok=True):
    "Run a console script in this process (`cwd`: the working directory meanwhile); assert its exit status."
    with contextlib.chdir(cwd or os.getcwd()): r = cli(COMMANDS[cmd], *args)
    if ok: assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.mark.parametrize("cmd,flags", [("medsft_train", ["--max-steps", "--resume", "--overwrite", "--swanlab-mode"]),
                                       ("medsft_train_lora", ["--lora-alpha", "--target-modules", "--modules-to-save"]),
                                       ("medsft_merge", ["--adapter-dir", "--output-dir", "--base"])])
def test_help(cmd, flags):
    out = run(cmd, "--help").stdout
    for f in flags: assert f in out, f"{cmd} --help lacks {f}"
    if cmd == "medsft_train":  # docments, and TrainingArguments' own help, are the help text; every field is a flag
        assert "tokens per row, prompt + think + answer" in " ".join(out.split())
        assert "less memory, ~30% slower" in " ".join(out.split()) and "--config" in out
        for f in ("--optim", "--lr-scheduler-kwargs", "--dataloader-num-workers", "--torch-compile", "--deepspeed"):
            assert f in out, f
        # medsft's own options first; the Trainer's pass-through fields after them, in a group of their own
        group = out.index("transformers.TrainingArguments options, passed through")
        assert out.index("--model ") < out.index("--train-file") < group < out.index("--optim "), out[:3000]
        assert len(out.split("options:")[0].splitlines()) < 5, "usage should not list hundreds of flags"


@contextlib.contextmanager
def _warnings(name):
    "The messages of WARNING and above that logger `name` (and its children) emit inside the block."
    import logging
    got, h = [], logging.Handler(logging.WARNING)
    h.emit = lambda rec: got.append(rec.getMessage())
    logging.getLogger(name).addHandler(h)
    try: yield got
    finally: logging.getLogger(name).removeHandler(h)


def test_train_resume_refuse(tmp_path):
    out = tmp_path/"run"
    SMALL = [*globals()["SMALL"], "--num-predict", "0", "--eval-steps", "100"]  # the folder rules are the subject
    r = run("medsft_train", *SMALL, "--num-train-epochs", "1", "--output-dir", out)
    assert "device: cpu" in r.stdout and "done: 2 steps" in r.stdout, r.stdout
    for d in (out, out/"checkpoint-1", out/"checkpoint-2"):
        for f in ("model.safetensors", "tokenizer.json", "chat_template.jinja", "generation_config.json"):
            assert (d/f).exists(), d/f
        eq(json.loads((d/"generation_config.json").read_text())["eos_token_id"][0], IM_END_ID)
    load_model_and_tokenizer(out/"checkpoint-1", device="cpu")
    # a second run into the same folder is refused, with one line on stderr
    r = run("medsft_train", *SMALL, "--output-dir", out, ok=False)
    eq(r.returncode, 2)
    assert "is not empty" in r.stderr and "Traceback" not in r.stderr, r.stderr
    # --resume continues from checkpoint-2 to the end of the second epoch, with no warning about the tied lm_head
    with _warnings("transformers") as logged:
        r = run("medsft_train", *SMALL, "--num-train-epochs", "2", "--output-dir", out, "--resume")
    assert "resuming from" in r.stdout and "checkpoint-2" in r.stdout, r.stdout
    assert not [m for m in logged if "missing keys" in m], logged
    eq(json.loads((out/"train_summary.json").read_text())["steps"], 4)
    eq(json.loads((out/"checkpoint-4"/"trainer_state.json").read_text())["global_step"], 4)
    # --resume of the complete run, same settings: it says so, exits 0 and touches nothing
    before = {f: f.stat().st_mtime_ns for f in out.rglob("*")}
    r = run("medsft_train", *SMALL, "--num-train-epochs", "2", "--output-dir", out, "--resume")
    assert "this run is complete (4 steps" in r.stdout and "train_loss_mean" not in r.stdout, r.stdout
    eq({f: f.stat().st_mtime_ns for f in out.rglob("*")}, before)
    # killed after its last checkpoint but before the summary (final evaluation, predictions): --resume finishes it
    (out/"train_summary.json").unlink()
    r = run("medsft_train", *SMALL, "--num-train-epochs", "2", "--output-dir", out, "--resume")
    assert "this run is complete" not in r.stdout and "train_loss_mean n/a" in r.stdout, r.stdout
    eq(json.loads((out/"train_summary.json").read_text())["steps"], 4)
    # --overwrite starts again and removes the old checkpoints
    run("medsft_train", *SMALL, "--max-steps", "1", "--output-dir", out, "--overwrite")
    eq(sorted(p.name for p in out.glob("checkpoint-*")), ["checkpoint-1"])


def test_lora_merge_predict(trained, tmp_path):
    "The session's LoRA run (2 steps on the trained full model), merged by the command: same answers, other weights."
    from medsft.inference import predict
    adapter, merged = trained["lora"], tmp_path/"merged"
    for d in (adapter, adapter/"checkpoint-1"):
        for f in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja",
                  "generation_config.json"):
            assert (d/f).exists(), d/f
    r = run("medsft_merge", "--adapter-dir", adapter, "--output-dir", merged)
    assert str(merged) in r.stdout
    assert (merged/"model.safetensors").exists() and not (merged/"adapter_config.json").exists()
    questions = ["高血压如何饮食？", "感冒需要吃抗生素吗？"]
    a = predict(questions, checkpoint=str(adapter), max_new_tokens=16, do_sample=False, device="cpu")
    b = predict(questions, checkpoint=str(merged), max_new_tokens=16, do_sample=False, device="cpu")
    eq(a, b)
    # and the adapter did change the model
    ids = torch.tensor([[9707, 1879, 151645]])
    base_logits = load_model_and_tokenizer(trained["full"], device="cpu")[0](ids).logits
    merged_logits = load_model_and_tokenizer(merged, device="cpu")[0](ids).logits
    assert (base_logits - merged_logits).abs().max() > 1e-3
    # a bad request is one clear line
    r = run("medsft_merge", "--adapter-dir", tmp_path/"nowhere", "--out-dir", tmp_path/"x", ok=False)
    eq(r.returncode, 2)
    assert "nowhere" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_show_prediction(trained):
    "A row and a conversation's second reply, answered by the trained tiny model, shown compact and labelled."
    from medsft.data import sample_conversations, sample_rows
    from medsft.train_full import predict_rows, show_prediction
    model, tok = load_model_and_tokenizer(trained["full"], device="cpu")
    conv = sample_conversations()[0]
    asking = {"messages": conv["messages"][:-1]}  # ends on the user's turn: answered after it
    preds = predict_rows(model, tok, [sample_rows()[0], conv, asking], max_new_tokens=6)
    eq([p.get("turn") for p in preds], [None, 2, 2])
    eq(preds[2]["question"], conv["messages"][-2]["content"])
    asked = [("", sample_rows()[0]["question"]),
             ("(turn 2 of a conversation) ", conv["messages"][-2]["content"])]
    for p, (turn, q) in zip(preds, asked):
        text = show_prediction(dict(p, text="\n" * 200, think="x" * 130, answer="\n", new_tokens=6), width=20)
        eq(text.split("\n")[:3], [f"Q: {turn}{q[:20]}" + ("…" if len(q) > 20 else ""),
                                  f"  think: {'x' * 20!r}… (130 chars)", "  answer: '\\n' (1 chars)"])
        assert text.endswith("(6 new tokens, 200 characters, all whitespace)"), text
        assert show_prediction(p).count("\n") == 3  # four lines, whatever the model wrote
    stops = [dict(preds[0], stopped=True, stop_token_id=IM_END_ID, closed=True),
             dict(preds[0], stopped=False, stop_token_id=None, closed=False)]
    eq([show_prediction(p).split("\n")[3].split(" (")[0] for p in stops],
       ["  think block closed by </think>; stopped on <|im_end|>",
        "  think block never closed; no terminator: hit max_new_tokens"])


def test_split_record_of_any_source(tmp_path):
    "split.json names its sources as the run config does: val_file=None kept, a row list as its count."
    from medsft.data import sample_rows
    from medsft.model import load_tokenizer
    from medsft.train_full import TrainConfig, build_datasets
    import datasets
    from dataclasses import replace
    rows = sample_rows()[:6]
    for train_file, val_file, want in [("sample", None, ("sample", None)), (rows, "", ("<6 rows>", "")),
                                       (datasets.Dataset.from_list(rows), sample_rows()[6:8], ("<6 rows>", "<2 rows>"))]:
        cfg = TrainConfig(model=TINY, train_file=train_file, val_file=val_file, output_dir=tmp_path/"out",
                          max_length=256)
        build_datasets(cfg, load_tokenizer(TINY), tmp_path/"split.json")
        rec = json.loads((tmp_path/"split.json").read_text(encoding="utf-8"))
        eq((rec["train_file"], rec["val_file"]), want)
    with pytest.raises(ValueError, match=r"^<2 rows>: 2 of its 2 rows are also training rows \(in <6 rows>;"):
        build_datasets(replace(cfg, val_file=rows[:2]), load_tokenizer(TINY))  # named, not printed whole


def test_lora_refuses_tied_targets(tmp_path):
    r = run("medsft_train_lora", *SMALL, "--max-steps", "1", "--target-modules", "q_proj", "lm_head",
            "--output-dir", tmp_path/"x", ok=False)
    eq(r.returncode, 2)
    assert "modules_to_save" in r.stderr, r.stderr


def test_real_slice_data_train_predict(tmp_path):
    "medsft_data -> medsft_train -> medsft_predict on a slice of the real validation file (../shared)."
    rows = read_jsonl(shared_dir(required=True)/"data"/"delicate_medical_r1"/"val.jsonl")[:20]
    write_jsonl(rows, tmp_path/"slice.jsonl")
    run("medsft_data", "--source", tmp_path/"slice.jsonl", "--out_dir", tmp_path)
    eq((len(read_jsonl(tmp_path/"train.jsonl")), len(read_jsonl(tmp_path/"val.jsonl"))), (18, 2))
    out = tmp_path/"out"
    r = run("medsft_train", "--model", TINY, "--train-file", tmp_path/"train.jsonl", "--val-file", tmp_path/"val.jsonl",
            "--max-steps", "2", "--max-length", "384", "--num-predict", "1", "--max-new-tokens", "4", "--output-dir", out,
            "--learning-rate", "1e-3", "--eval-steps", "2", "--eval-on-start", "--no-progress", cwd=tmp_path)
    assert "val: 2 rows -> 2 examples" in r.stdout, r.stdout
    assert "train_loss_mean" in r.stdout and "last_logged_loss" in r.stdout, r.stdout  # losses named for what they are
    # the prediction, four labelled lines: the question, short reprs of think and answer, how the reply ended
    pred = re.search(r"^Q: (.*)\n  think: '.*' \(\d+ chars\)\n  answer: '.*' \(\d+ chars\)\n  "
                     r"(think block closed by </think>|think block never closed|no think block); "
                     r".*\(4 new tokens, \d+ characters",
                     r.stdout, re.M)
    assert pred and pred[1] == read_jsonl(tmp_path/"val.jsonl")[0]["question"][:120], r.stdout
    s = json.loads((out/"train_summary.json").read_text(encoding="utf-8"))
    eq(s["steps"], 2)
    evals = [h["eval_loss"] for h in s["log_history"] if "eval_loss" in h]
    assert evals[-1] < evals[0] - 0.01 and s["tokens"] > 0, s  # the validation loss drops from its untrained value
    assert (out/"loss.png").stat().st_size > 1000
    r = run("medsft_predict", "-i", rows[-1]["question"], "-c", out, "-m", "8", "--greedy", "--json")
    eq(json.loads(r.stdout)["new_tokens"] > 0, True)


# kill-and-resume: 6 steps of batch 2 over 8 rows (1.5 epochs), a complete checkpoint every 2 steps
KILL = ["--model", TINY, "--train-file", "sample", "--val-file", "", "--max-train-rows", "8", "--max-length", "256",
        "--per-device-train-batch-size", "2", "--gradient-accumulation-steps", "1", "--max-steps", "6",
        "--save-steps", "2", "--eval-steps", "100", "--logging-steps", "1", "--num-predict", "0", "--no-progress",
        "--learning-rate", "1e-3"]


def _run_env(cmd, *args, fault=None):
    env = {**ENV, **({"MEDSFT_FAULT": fault} if fault else {})}
    return subprocess.run([str(BIN/cmd), *map(str, args)], capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow  # real processes, killed: the process is the subject (about a minute each)
@pytest.mark.parametrize("cmd,weights", [("medsft_train", "model.safetensors"),
                                         ("medsft_train_lora", "adapter_model.safetensors")])
def test_kill_and_resume(tmp_path, cmd, weights):
    "SIGKILL between saves and while checkpoint-4 is written; --resume ends with the weights of an uninterrupted run."
    from safetensors.torch import load_file
    from medsft.model import COMPLETE_FILE, is_complete
    ref, out = tmp_path/"ref", tmp_path/"out"
    run(cmd, *KILL, "--output-dir", ref)
    # (a) killed after optimizer step 3, between the saves of steps 2 and 4
    r = _run_env(cmd, *KILL, "--output-dir", out, fault="step:3")
    eq(r.returncode, -9)
    eq([p.name for p in sorted(out.glob("checkpoint-*"))], ["checkpoint-2"])
    assert is_complete(out/"checkpoint-2") and not (out/COMPLETE_FILE).exists()
    with pytest.raises(ValueError, match="incomplete"): load_model_and_tokenizer(out, device="cpu")  # no final model
    # (b) resumed, then killed while checkpoint-4 is being written
    r = _run_env(cmd, *KILL, "--output-dir", out, "--resume", fault="save:4")
    eq(r.returncode, -9)
    assert "checkpoint-2" in r.stdout, r.stdout
    half = out/"checkpoint-4"
    assert (half/weights).exists() and not (half/COMPLETE_FILE).exists()
    with pytest.raises(ValueError, match="incomplete"): load_model_and_tokenizer(half, device="cpu")
    opt = half/"optimizer.pt"  # stand for a kill in the middle of a file: cut the optimizer state short
    opt.write_bytes(opt.read_bytes()[:opt.stat().st_size // 2])
    # resumed again: checkpoint-4 is skipped (and removed), the run continues from checkpoint-2 and completes
    r = run(cmd, *KILL, "--output-dir", out, "--resume")
    assert "skipping checkpoint-4: incomplete" in r.stdout and "resuming from" in r.stdout, r.stdout
    assert f"{out/'checkpoint-2'}" in r.stdout, r.stdout
    eq(json.loads((out/"train_summary.json").read_text())["steps"], 6)
    for d in (out, out/"checkpoint-4", out/"checkpoint-6"): assert is_complete(d), d
    a, b = load_file(out/weights), load_file(ref/weights)
    eq(sorted(a), sorted(b))
    for k in a: assert torch.equal(a[k], b[k]), k  # bitwise equal on the CPU
    load_model_and_tokenizer(out, device="cpu")


@pytest.mark.parametrize("name,cls", [("full_sft.yaml", "TrainConfig"), ("lora.yaml", "LoraTrainConfig")])
def test_shipped_configs_parse(root, name, cls):
    "configs/*.yaml: every key is a field, parses to its value, and the reference's numbers are there."
    import yaml
    from medsft import train_full, train_lora
    cls = getattr(train_lora if cls.startswith("Lora") else train_full, cls)
    path = root/"configs"/name
    cfg = cls(**parse_command(cls, ["--config", str(path), "--max-steps", "3"]))
    for k, v in yaml.safe_load(path.read_text(encoding="utf-8")).items():
        got = getattr(cfg, k)
        eq(getattr(got, "value", got), v)
    rows_per_step = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    eq((cfg.max_steps, rows_per_step, cfg.num_train_epochs, cfg.save_steps), (3, 4, 2, 400))
    eq((cfg.activation_checkpointing, cfg.packing, cfg.chunked_loss), (None, True, True))  # by need, fast path


def load_plain(folders:list)->list:
    "Load each folder with plain transformers/PEFT calls (nothing of medsft) and generate 4 greedy tokens."
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from peft import PeftModel
    res = []
    for d in folders:
        tok = AutoTokenizer.from_pretrained(d)
        if (d/"adapter_config.json").exists():
            base = json.loads((d/"adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
            with peft_quiet():  # a warnings filter only: PEFT's FutureWarning on every wrap
                m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), d)
        else: m = AutoModelForCausalLM.from_pretrained(d)
        ids = tok.apply_chat_template([{"role": "user", "content": "头痛怎么办？"}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True)
        out = m.generate(**ids, max_new_tokens=4, do_sample=False)
        res.append(dict(new=out.shape[1] - ids["input_ids"].shape[1], use_cache=m.config.use_cache,
                        eos=m.generation_config.eos_token_id))
    return res


SERVING = ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json"]
RESUME_ONLY = {"optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json", "training_args.bin"}


def test_folders_are_inference_ready(trained):
    "Every folder medsft writes loads with plain transformers/PEFT and generates; it has what serving engines read."
    full, lora, merged = trained["full"], trained["lora"], trained["merged"]
    folders = [full, full/"checkpoint-1", lora, lora/"checkpoint-1", merged]
    for d in folders:
        names = {p.name for p in d.iterdir() if p.is_file()}
        weights = ["adapter_config.json", "adapter_model.safetensors"] if d.parent == lora or d == lora else \
                  ["config.json", "model.safetensors"]
        for f in SERVING + weights: assert f in names, (d, f)
        if d.name.startswith("checkpoint-"): assert RESUME_ONLY - {"training_args.bin"} <= names, d
        else: eq(RESUME_ONLY & names, set())                                   # nothing training-only
        gen = json.loads((d/"generation_config.json").read_text())
        eq(gen["eos_token_id"], [IM_END_ID, 151643])
        if "config.json" in names:
            c = json.loads((d/"config.json").read_text())
            eq((c["use_cache"], c["architectures"]), (True, ["Qwen3ForCausalLM"]))
    res = load_plain(folders)
    for x in res: eq((x["new"] > 0, x["use_cache"], x["eos"]), (True, True, [IM_END_ID, 151643]))


def test_fp16_nonfinite_loss_stops_the_run(tmp_path):
    "Under fp16 autocast a NaN loss stops `train()` at the first logged step, with one message naming fp16 and the fixes."
    import io
    from medsft.train_full import TrainConfig, build_datasets, build_trainer, prepare_model
    from medsft.trainer import LossGuard
    m, t = load_model_and_tokenizer(TINY, device="cpu")
    c = TrainConfig(model=TINY, output_dir=str(tmp_path), train_file="sample", val_file="", max_train_rows=4, max_length=256,
                    max_steps=3, logging_steps=1, save_strategy="no", progress=False, swanlab_mode="disabled")
    with contextlib.redirect_stdout(io.StringIO()):
        tr = build_trainer(c, prepare_model(m, c), t, build_datasets(c, t)[0], callbacks=[LossGuard()])
    tr.args.fp16 = True  # what a GPU without bf16 trains under (this CPU cannot run fp16 autocast)
    tr.compute_loss = lambda model, inputs, *a, **kw: model(**inputs).loss * float("nan")  # the overflow
    with pytest.raises(ValueError) as e: tr.train()
    msg = str(e.value)
    assert "at step 1 under fp16 autocast" in msg and "dtype bf16" in msg and "dtype fp32" in msg and "learning_rate" in msg, msg
    eq(tr.state.global_step, 1)
