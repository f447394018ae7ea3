"Round trips of `predict`, `medsft_predict` and `medsft_eval` (medsft.inference) on tiny model folders."
import json, os, subprocess, sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastcore.test import test_eq as eq

import medsft.inference as inference
from medsft.files import read_jsonl, write_jsonl
from conftest import cli
from medsft.commands import medsft_eval, medsft_predict
from medsft.inference import clear_predictors, get_predictor, predict
from medsft.evaluation import evaluate
from medsft.model import TINY, load_tokenizer, peft_quiet, save_model_folder, tiny_qwen3

BIN = Path(sys.executable).parent
QUESTION = "高血压如何饮食？"


def run(*args, env=None, cwd=None):
    "Run a command with this venv's scripts, one thread, and return the completed process (bytes out)."
    return subprocess.run([str(a) for a in args], capture_output=True, cwd=cwd, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def run_all(commands):
    "Run several commands at once (each import of torch takes seconds); return their (returncode, stdout, stderr)."
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([str(a) for a in c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) for c in commands]
    outs = [p.communicate(timeout=600) for p in procs]
    return [(p.returncode, out, err) for p, (out, err) in zip(procs, outs)]


def one_line_error(p, *needles):
    "Exit code 2, a single stderr line holding every needle, no traceback."
    err = p.stderr.decode("utf-8") if isinstance(p.stderr, bytes) else p.stderr
    eq(p.returncode, 2)
    lines = err.strip().splitlines()
    eq(len(lines), 1)
    assert "Traceback" not in err
    for n in needles: assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    "A full checkpoint, a LoRA adapter on it and the merged model, all from the embedded tiny model."
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    work = tmp_path_factory.mktemp("inference")
    full = tiny_qwen3(work / "checkpoint-1")
    tok = load_tokenizer(full)
    with peft_quiet(): lora = get_peft_model(AutoModelForCausalLM.from_pretrained(full), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    adapter = save_model_folder(lora, tok, work / "adapter")
    merged = save_model_folder(lora.merge_and_unload(), tok, work / "merged")
    return dict(full=full, adapter=adapter, merged=merged, work=work)


def _check_only_new_text(outs:dict, tok):
    "Each printed text ends with a newline and holds no prompt, template tokens or system prompt."
    for kind, out in outs.items():
        assert out.endswith("\n") and out.strip(), (kind, out)
        for echo in (QUESTION, "<|im_start|>", "<|im_end|>", "system", "assistant", "医学专家"): assert echo not in out, (kind, echo)
        assert len(tok(out[:-1])["input_ids"]) <= 64, (kind, out)  # 32 new tokens; re-encoding random tokens can split them


def test_predict_prints_only_new_text(folders, capfd):
    "`print(predict(...))` writes only generated text to the process's stdout (file-descriptor level), for a full checkpoint, an adapter and a merged model."
    outs = {}
    for kind in ("full", "adapter", "merged"):
        capfd.readouterr()
        print(predict(QUESTION, checkpoint=str(folders[kind]), max_new_tokens=32))
        outs[kind] = capfd.readouterr().out
    _check_only_new_text(outs, load_tokenizer(folders["full"]))


@pytest.mark.slow  # three fresh Pythons (imports take seconds each)
def test_python_c_prints_only_new_text(folders):
    "The issue's 'Done when' command, as a user types it: a fresh `python -c` prints only generated text."
    kinds = ["full", "adapter", "merged"]
    code = "from medsft.inference import predict; print(predict('{q}', checkpoint={d!r}, max_new_tokens=32))"
    results = run_all([[sys.executable, "-c", code.format(q=QUESTION, d=str(folders[k]))] for k in kinds])
    for kind, (rc, _, err) in zip(kinds, results): eq(rc, 0)
    _check_only_new_text({k: out.decode("utf-8") for k, (_, out, _) in zip(kinds, results)}, load_tokenizer(folders["full"]))


def test_predict_loads_once(folders, monkeypatch):
    "A second `predict` on the same checkpoint reuses the loaded model."
    clear_predictors()
    calls = []
    real = inference.load_model_and_tokenizer
    monkeypatch.setattr(inference, "load_model_and_tokenizer", lambda *a, **k: calls.append(a) or real(*a, **k))
    for _ in range(2): predict(QUESTION, checkpoint=folders["full"], max_new_tokens=4)
    eq(len(calls), 1)
    predict(QUESTION, checkpoint=folders["merged"], max_new_tokens=4)
    eq(len(calls), 2)


def test_batched_equals_sequential(folders):
    rec = predict([QUESTION, "头痛怎么办？", "我血糖偏高，三餐如何安排？"], checkpoint=folders["full"], max_new_tokens=12,
                  do_sample=False, batch_size=3, return_dict=True)
    one = [predict(q, checkpoint=folders["full"], max_new_tokens=12, do_sample=False, return_dict=True)
           for q in [QUESTION, "头痛怎么办？", "我血糖偏高，三餐如何安排？"]]
    eq(rec, one)


def _cli_error(monkeypatch, capsys, *args):
    "Run `medsft_predict` in this process with `args`; return (exit code, stderr)."
    monkeypatch.setattr(sys, "argv", ["medsft_predict", *map(str, args)])
    with pytest.raises(SystemExit) as e: medsft_predict()
    return e.value.code, capsys.readouterr().err


def test_cli_errors(folders, tmp_path, monkeypatch, capsys):
    "Each user error: exit code 2, one line on stderr naming the problem."
    monkeypatch.delenv("MEDSFT_DEBUG", raising=False)
    nothing = tmp_path / "nothing"
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    orphan = tmp_path / "orphan-adapter"
    orphan.mkdir()
    for f in folders["adapter"].iterdir(): (orphan / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((orphan / "adapter_config.json").read_text())
    (orphan / "adapter_config.json").write_text(json.dumps(cfg | {"base_model_name_or_path": str(tmp_path / "gone")}))
    cases = [(["-i", QUESTION, "-c", nothing], ["no such folder", "nothing"]),
             (["-i", QUESTION, "-c", tmp_path], ["no config.json"]),
             (["-i", QUESTION, "-c", no_weights], ["no weights", "no-weights"]),
             (["-i", QUESTION, "-c", orphan], ["base model", "gone"]),
             (["-i", "", "-c", TINY], ["empty question"]),
             (["-i", "   ", "-c", TINY], ["empty question"]),
             (["-c", TINY], ["-i/--input"]),
             (["-i", QUESTION], ["no such folder", "checkpoint-1084", "medsft_train"])]
    monkeypatch.chdir(tmp_path)  # the default checkpoint folder is relative
    for args, needles in cases:
        code, err = _cli_error(monkeypatch, capsys, *args)
        eq(code, 2)
        lines = err.strip().splitlines()
        eq(len(lines), 1)
        for n in needles: assert n in lines[0], (args, n, lines[0])


def test_cli_error_in_a_real_process(tmp_path):
    "The console script itself: exit code 2, one line, no traceback."
    one_line_error(run(BIN / "medsft_predict", "-i", QUESTION, "-c", tmp_path / "missing"), "no such folder")


def test_cli_json_utf8_and_flags():
    "--json on a console that cannot encode Chinese still writes UTF-8; -m and --max-new-tokens agree."
    p = run(BIN / "medsft_predict", "-i", QUESTION, "-c", TINY, "-m", 6, "--json", "--greedy",
            env={"PYTHONIOENCODING": "ascii"})
    eq(p.returncode, 0)
    rec = json.loads(p.stdout.decode("utf-8"))
    eq(rec["question"], QUESTION)
    eq(sorted(rec), ["answer", "closed", "finished", "new_tokens", "question", "stop_token_id", "stopped", "text", "think"])
    eq((rec["new_tokens"], rec["stopped"], rec["finished"]), (6, False, False))
    assert "raise -m" in p.stderr.decode("utf-8")  # the note about the budget
    eq(rec["text"], predict(QUESTION, checkpoint=TINY, max_new_tokens=6, do_sample=False))


def test_cli_stream_prints_only_new_text():
    "--stream prints exactly the text `predict` returns for the same seed: the new text, nothing else."
    streamed = cli(medsft_predict, "-i", QUESTION, "-c", TINY, "-m", 8, "--seed", 3, "--stream")
    eq(streamed.returncode, 0)
    eq(streamed.stdout, predict(QUESTION, checkpoint=TINY, max_new_tokens=8, seed=3) + "\n")


def test_cli_file_round_trip(tmp_path):
    "--file: a JSONL of questions (or messages) in, the same rows plus results out, in order."
    rows = [dict(id=1, question=QUESTION, answer="建议低盐饮食。"), dict(id=2, messages=[{"role": "user", "content": "头痛怎么办？"}])]
    src, dst = write_jsonl(rows, tmp_path / "in.jsonl"), tmp_path / "out.jsonl"
    p = cli(medsft_predict, "--file", src, "-o", dst, "-c", TINY, "-m", 5, "--greedy", "--batch-size", 2)
    eq(p.returncode, 0)
    out = read_jsonl(dst)
    eq([r["id"] for r in out], [1, 2])
    eq([r["question"] for r in out[:1]], [QUESTION])
    eq([r["new_tokens"] for r in out], [5, 5])
    eq((out[0]["gold_answer"], out[0]["answer"]), ("建议低盐饮食。", ""))  # the input answer is kept; 5 tokens: unfinished
    eq(out[0]["text"], predict(QUESTION, checkpoint=TINY, max_new_tokens=5, do_sample=False))


def test_cli_in_process(tmp_path, monkeypatch, capsys):
    "Flag spellings, --file to stdout, a bad --file row, and --help, without starting a process each."
    def cli(*args):
        monkeypatch.setattr(sys, "argv", ["medsft_predict", *map(str, args)])
        medsft_predict()
        return capsys.readouterr().out
    short = cli("-i", QUESTION, "-c", TINY, "-m", 5, "--greedy", "--json")
    eq(cli("--input", QUESTION, "--checkpoint", TINY, "--max-new-tokens", 5, "--greedy", "--json"), short)
    eq(cli("--input", QUESTION, "--checkpoint", TINY, "--max_new_tokens", 5, "--greedy", "--json"), short)
    eq(json.loads(short)["new_tokens"], 5)
    src = write_jsonl([dict(question=QUESTION), dict(question="头痛怎么办？")], tmp_path / "in.jsonl")
    lines = cli("--file", src, "-c", TINY, "-m", 5, "--greedy").splitlines()
    eq([json.loads(l)["question"] for l in lines], [QUESTION, "头痛怎么办？"])
    eq(json.loads(lines[0])["text"], json.loads(short)["text"])
    write_jsonl([dict(question=QUESTION), dict(text="no question here")], tmp_path / "bad.jsonl")
    code, err = _cli_error(monkeypatch, capsys, "--file", tmp_path / "bad.jsonl", "-c", TINY)
    eq(code, 2)
    assert "bad.jsonl:2" in err and "question" in err, err
    code, err = _cli_error(monkeypatch, capsys, "-i", QUESTION, "-c", TINY, "--stream", "--json")
    eq(code, 2)


def test_cli_help(monkeypatch, capsys):
    for func, flags in [(medsft_predict, ["-i", "-c", "-m", "--file", "--no-think", "--stream", "--json", "--system", "--seed"]),
                        (medsft_eval, ["-c", "--val-file", "-n", "--limit", "-m", "--output-dir", "--greedy"])]:
        monkeypatch.setattr(sys, "argv", [func.__name__, "--help"])
        with pytest.raises(SystemExit) as e: func()
        eq(e.value.code, 0)
        out = capsys.readouterr().out
        for f in flags: assert f in out, (func.__name__, f)


def test_medsft_eval_on_val_slice(shared, tmp_path):
    "medsft_eval on the first rows of ../shared val.jsonl writes predictions and a summary."
    val = shared / "data" / "delicate_medical_r1" / "val.jsonl"
    out = tmp_path / "eval"
    p = cli(medsft_eval, "-c", TINY, "-f", val, "-n", 3, "-m", 8, "-b", 3, "-o", out)
    eq(p.returncode, 0)
    assert "BLEU-4" in p.stdout
    preds = read_jsonl(out / "predictions.jsonl")
    gold = read_jsonl(val)[:3]
    eq([r["question"] for r in preds], [r["question"] for r in gold])
    eq([r["gold_answer"] for r in preds], [r["answer"] for r in gold])
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    eq((summary["n"], summary["max_new_tokens"], summary["finished"], summary["bleu4"]), (3, 8, 0.0, 0.0))
    eq(summary["mean_new_tokens"], 8.0)


# Issue 11 §1: rows are validated before the model loads; long jobs lose nothing.
EVAL_ROWS = [dict(question="头痛怎么办？", think="", answer=None), dict(question="发烧怎么办？", think="", answer=38.5),
             dict(question="咳嗽怎么办？", think="", answer="多喝水")]
PREDICT_ROWS = [dict(question=123), dict(question=None), dict(question="咳嗽")]


def test_bad_rows_fail_before_the_model_loads(tmp_path):
    "The issue's two files: exit 2, one line naming file, line and field; a missing checkpoint is never reached."
    f = write_jsonl(EVAL_ROWS, tmp_path / "f.jsonl")
    q = write_jsonl(PREDICT_ROWS, tmp_path / "q.jsonl")
    gone = tmp_path / "no-such-model"  # loading it would fail with "no such folder": validation comes first
    for p, needles in [(cli(medsft_eval, "-c", gone, "--val-file", f), ["f.jsonl:1", "'answer'", "NoneType"]),
                       (cli(medsft_predict, "-f", q, "-c", gone), ["q.jsonl:1", "'question'", "int"])]:
        one_line_error(p, *needles)



def test_bad_settings_refused_before_load_or_write(tmp_path, monkeypatch):
    "Issue 22 §4: `-f q.jsonl --skip-bad-rows -m 0 -o out.jsonl` exits 2 before any model loads or out.jsonl exists."
    q = write_jsonl([{"question": QUESTION}], tmp_path / "q.jsonl")
    def no_load(*a, **k): raise AssertionError("a model was loaded")
    monkeypatch.setattr(inference, "get_predictor", no_load)
    for bad in (["-m", "0"], ["--temperature", "-1"], ["--batch-size", "0"]):
        p = cli(medsft_predict, "-f", q, "--skip-bad-rows", *bad, "-o", tmp_path / "out.jsonl", "-c", TINY)
        eq(p.returncode, 2)
        assert p.stderr.count("\n") == 1 and "AssertionError" not in p.stderr, p.stderr
        assert not (tmp_path / "out.jsonl").exists(), bad

def test_skip_bad_rows_answers_the_good_ones(tmp_path):
    "--skip-bad-rows: the good row is answered, the bad ones are listed with their lines."
    f = write_jsonl(EVAL_ROWS, tmp_path / "f.jsonl")
    q = write_jsonl(PREDICT_ROWS, tmp_path / "q.jsonl")
    for path in (f, q):  # one unparsable line each: skipped and listed too
        with open(path, "a", encoding="utf-8") as fh: fh.write('{"question": "断行\n')
    (rc1, o1, e1), (rc2, o2, e2) = [(p.returncode, p.stdout, p.stderr) for p in (
        cli(medsft_eval, "-c", TINY, "--val-file", f, "--skip-bad-rows", "-m", 4, "--json", "-o", tmp_path / "ev"),
        cli(medsft_predict, "-f", q, "-c", TINY, "--skip-bad-rows", "-m", 4, "--greedy"))]
    eq((rc1, rc2), (0, 0))
    summary = json.loads(o1)
    eq((summary["n"], sorted(summary["skipped"])), (1, [f"{f}:1", f"{f}:2", f"{f}:{len(EVAL_ROWS) + 1}"]))
    eq([r["question"] for r in read_jsonl(tmp_path / "ev" / "predictions.jsonl")], ["咳嗽怎么办？"])
    assert "f.jsonl:1" in e1 and "f.jsonl:2" in e1
    eq([json.loads(l)["question"] for l in o2.splitlines()], ["咳嗽"])
    err = e2
    assert "skipped 3 of 4 rows" in err and "q.jsonl:1" in err and "q.jsonl:2" in err, err
    assert f"q.jsonl:{len(PREDICT_ROWS) + 1}: not a JSON object" in err, err


def _count_generated(monkeypatch):
    "Record how many questions each `Predictor.generate` call gets."
    calls, real = [], inference.Predictor.generate
    def counting(self, questions, *a, **k):
        calls.append(len(questions))
        return real(self, questions, *a, **k)
    monkeypatch.setattr(inference.Predictor, "generate", counting)
    return calls


def test_predict_file_resumes(tmp_path, monkeypatch, capsys):
    "Interrupted after 2 of 5 rows (one line cut mid-write): the rerun answers the other 3, output = uninterrupted run."
    qs = [QUESTION, "头痛怎么办？", "咳嗽", "头痛怎么办？", "发烧"]  # a repeated question counts twice
    src = write_jsonl([dict(id=i, question=q) for i, q in enumerate(qs)], tmp_path / "in.jsonl")
    def cli(out):
        monkeypatch.setattr(sys, "argv", ["medsft_predict", "-f", str(src), "-o", str(out), "-c", TINY, "-m", "4",
                                          "--greedy", "--batch-size", "1"])
        medsft_predict()
    cli(tmp_path / "all.jsonl")
    full = (tmp_path / "all.jsonl").read_text(encoding="utf-8").splitlines()
    eq(len(full), 5)
    part = tmp_path / "part.jsonl"
    part.write_text("\n".join(full[:2]) + "\n" + full[2][:15], encoding="utf-8")  # killed while writing row 3
    calls = _count_generated(monkeypatch)
    capsys.readouterr()
    cli(part)
    eq(sum(calls), 3)
    assert "already answers 2 of 5 rows" in capsys.readouterr().err
    eq(sorted(read_jsonl(part), key=lambda r: r["id"]), read_jsonl(tmp_path / "all.jsonl"))
    calls.clear()
    cli(part)  # everything done: nothing generated, nothing added
    eq((sum(calls), len(read_jsonl(part))), (0, 5))
    assert "nothing left to do" in capsys.readouterr().err
    src = write_jsonl([dict(question="另一个问题")], tmp_path / "in.jsonl")  # another input, the same -o file
    cli(part)
    assert "also holds 5 answers to questions not in" in capsys.readouterr().err
    eq(len(read_jsonl(part)), 6)


def test_predict_file_never_reuses_another_runs_answers(tmp_path, monkeypatch):
    "Issue 21: -o after the same command with another -c (or -m, or --batch-size) answers again, never hands back A's."
    src = write_jsonl([dict(question=q) for q in (QUESTION, "咳嗽")], tmp_path / "q.jsonl")
    untied = dict(tie_word_embeddings=False)  # tied random weights write "\n" whatever the seed
    a, b = (tiny_qwen3(tmp_path / n, seed=s, **untied) for n, s in (("a", 5), ("b", 6)))
    out = tmp_path / "out.jsonl"
    calls = _count_generated(monkeypatch)
    def run(*flags):
        calls.clear()
        p = cli(medsft_predict, "-f", src, "-o", out, "-m", 4, "--greedy", *flags)
        eq(p.returncode, 0)
        return sum(calls), [r["text"] for r in read_jsonl(out)], p.stderr
    n, texts_a, _ = run("-c", a)
    eq((n, run("-c", a)[0]), (2, 0))  # the same run: resumed, nothing to do
    n, texts_b, err = run("-c", b)
    eq((n, len(texts_b)), (2, 2))
    assert "held 2 answers of another run" in err, err
    eq(texts_b, [r["text"] for r in predict([QUESTION, "咳嗽"], checkpoint=b, max_new_tokens=4, do_sample=False,
                                          return_dict=True)])
    assert texts_b != texts_a
    eq(run("-c", b, "-m", 3)[0], 2)  # other settings
    eq(run("-c", b, "-m", 3, "--batch-size", 1)[0], 2)  # another batch size changes padding, so the text


def test_evaluate_resumes_and_restarts_for_another_model(tmp_path, monkeypatch):
    "evaluate: a rerun scores only missing rows; the same folder retrained (or other settings) starts afresh."
    val = write_jsonl([dict(question=f"问题{i}", think="", answer="多喝水") for i in range(4)], tmp_path / "val.jsonl")
    model = tiny_qwen3(tmp_path / "m", seed=5)
    kw = dict(max_new_tokens=3, do_sample=False, batch_size=1, out_dir=tmp_path / "ev")
    first = evaluate(model, val, **kw)
    preds = tmp_path / "ev" / "predictions.jsonl"
    lines = preds.read_text(encoding="utf-8").splitlines()
    preds.write_text("\n".join(lines[:1]) + "\n", encoding="utf-8")
    calls = _count_generated(monkeypatch)
    again = evaluate(model, val, **kw)
    eq((sum(calls), again["answered_now"], len(read_jsonl(preds))), (3, 3, 4))
    drop = ("answered_now", "tokens_per_second", "seconds")
    eq({k: v for k, v in again.items() if k not in drop}, {k: v for k, v in first.items() if k not in drop})
    eq(evaluate(model, val, **{**kw, "max_new_tokens": 2})["answered_now"], 4)  # other settings
    tiny_qwen3(tmp_path / "m", seed=6)  # retrained into the same folder
    eq(evaluate(model, val, **{**kw, "max_new_tokens": 2})["answered_now"], 4)
    eq(len(read_jsonl(preds)), 4)


# Issue 11 §2: no stale model.
def test_predict_after_retraining_into_the_same_folder(trained, tmp_path):
    "predict on a trained run's folder, retrain into it (overwrite=True), predict: the answer comes from the new weights."
    import shutil
    from medsft.train_full import train_full
    d = Path(shutil.copytree(trained["full"], tmp_path / "run"))  # a finished run, as if trained here
    kw = dict(model=TINY, train_file="sample", val_file="", output_dir=d, num_predict=0, max_length=256,
              per_device_train_batch_size=2, gradient_accumulation_steps=1, activation_checkpointing=False,
              eval_steps=100, save_steps=100, learning_rate=5e-3, progress=False, swanlab_mode="disabled")
    clear_predictors()
    before = predict(QUESTION, checkpoint=d, max_new_tokens=8, do_sample=False)
    d2 = train_full(max_steps=1, overwrite=True, **kw)
    eq(d2, d)
    after = predict(QUESTION, checkpoint=d, max_new_tokens=8, do_sample=False)
    fresh = inference.Predictor(d).generate([QUESTION], max_new_tokens=8, do_sample=False)[0]["text"]
    eq(after, fresh)  # what a new process would answer
    assert get_predictor(d).state == inference.checkpoint_state(d)
    if after == before: print("note: both models gave the same greedy text; the state check above still holds")


def test_generation_settings_go_in_the_config_only(folders, monkeypatch):
    "transformers warns when settings come both in `generation_config` and as `generate` arguments: medsft passes them in the config only, training-end predictions included."
    from transformers import GenerationConfig
    from medsft.model import load_model_and_tokenizer
    from medsft.train_full import predict_rows
    model, tok = load_model_and_tokenizer(folders["full"], device="cpu")
    seen, real = [], model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: seen.append(set(kw)) or real(**kw))
    predict_rows(model, tok, [dict(question=QUESTION)], max_new_tokens=2)
    inference.Predictor((model, tok)).generate([QUESTION], max_new_tokens=2)
    eq(len(seen), 2)
    for kw in seen: eq(kw & set(GenerationConfig().to_dict()), set())


def test_adapter_loads_without_deprecation_warnings(folders):
    "Loading a LoRA adapter (PEFT on transformers 5.24) warns nothing: PEFT's `is_gradient_checkpointing` read is the one known FutureWarning, silenced where PEFT is called."
    import warnings
    from medsft.model import load_model_and_tokenizer
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        load_model_and_tokenizer(folders["adapter"], device="cpu")
    eq([str(x.message) for x in w if issubclass(x.category, (FutureWarning, DeprecationWarning))], [])


def test_prompt_plus_budget_over_the_context_is_refused(tmp_path):
    "Issue 22 §3: prompt + max_new_tokens over the model's context (from its config) fails naming the row, or is skipped."
    import json as _json
    from medsft.model import tiny_qwen3
    context = _json.loads((tiny_qwen3() / "config.json").read_text(encoding="utf-8"))["max_position_embeddings"]
    p = cli(medsft_predict, "-i", QUESTION, "-c", TINY, "-m", context)
    eq(p.returncode, 2)
    assert f"context of {context} tokens" in p.stderr and "\n" not in p.stderr.strip(), p.stderr
    src = write_jsonl([dict(question=QUESTION), dict(question="咳嗽")], tmp_path / "q.jsonl")
    p = cli(medsft_predict, "-f", src, "-c", TINY, "-m", context - 20, "--greedy")
    eq(p.returncode, 2)
    assert "q.jsonl:1:" in p.stderr, p.stderr  # the longer question; nothing generated before the check
    out = tmp_path / "out.jsonl"
    src = write_jsonl([dict(answer="no question"), dict(question=QUESTION), dict(question="咳嗽")], tmp_path/"q2.jsonl")
    p = cli(medsft_predict, "-f", src, "-c", TINY, "-m", context - 20, "--greedy", "--skip-bad-rows", "-o", out)
    eq(p.returncode, 0)
    assert "q2.jsonl:1: missing" in p.stderr and "q2.jsonl:2: " in p.stderr, p.stderr  # file lines, not positions


def test_chatbox_outside_a_notebook(trained):
    "The ChatBox imported from the package (not the notebook's namespace) answers a follow-up with the history."
    from medsft.inference import ChatBox
    box = ChatBox(trained["full"], max_new_tokens=6, do_sample=False)
    first = box.send("头痛怎么办？")
    eq(set(first) >= {"think", "answer"}, True)
    seen = []
    real = box.predictor.stream
    box.predictor.stream = lambda msgs, s: seen.append(msgs) or real(msgs, s)
    box.send("还需要吃药吗？")
    eq([m["role"] for m in seen[0]], ["system", "user", "assistant", "user"])  # the earlier exchange is sent
    eq([m["content"] for m in box.messages if m["role"] == "user"], ["头痛怎么办？", "还需要吃药吗？"])
    box.clear()
    eq(box.messages, [])


def test_output_flag_edges_and_the_unfinished_note(tmp_path):
    "-o '' prints (as without -o); -o with -i is refused before loading; the note names only what happened."
    src = write_jsonl([dict(question=QUESTION)], tmp_path/"q.jsonl")
    p = cli(medsft_predict, "-f", src, "-c", TINY, "-m", 4, "--greedy", "-o", "")
    eq(p.returncode, 0)
    eq(json.loads(p.stdout)["question"], QUESTION)
    assert "1 of 1 outputs unfinished: 1 stopped at max_new_tokens=4 (raise -m)\n" in p.stderr, p.stderr
    assert "think block" not in p.stderr, p.stderr  # nothing ended inside an open think block: not mentioned
    p = cli(medsft_predict, "-f", src, "-c", TINY, "-m", 4, "--greedy", "-o", tmp_path/"o.jsonl")
    assert f"wrote 1 answers to {tmp_path/'o.jsonl'} (1 in all)" in p.stderr, p.stderr  # where the answers went
    p = cli(medsft_predict, "-i", QUESTION, "-c", "no/such/model", "-o", tmp_path/"a.jsonl")
    one_line_error(p, "-o/--output", "--file")
    assert not (tmp_path/"a.jsonl").exists()
