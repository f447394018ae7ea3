"Console-script round trips and error contracts of `medsft_data` (medsft.data)."
import json, os, subprocess, sys
from pathlib import Path

import pytest
from fastcore.test import test_eq as eq

from medsft.data import read_jsonl, write_jsonl, split_rows, sample_rows, shared_dir

CLI = str(Path(sys.executable).parent/"medsft_data")


def run(*args, env=None, cwd=None):
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=300)


def shared():
    d = shared_dir()  # raises under CI=true when missing
    if d is None: pytest.skip("../shared not found (set MEDSFT_SHARED)")
    return d


def one_line_error(p, *needles):
    "Exit code 2, a single stderr line containing every needle, no traceback."
    eq(p.returncode, 2)
    lines = p.stderr.strip().splitlines()
    eq(len(lines), 1)
    assert "Traceback" not in p.stderr
    for n in needles: assert n in lines[0], (n, lines[0])


def test_help():
    p = run("--help")
    eq(p.returncode, 0)
    for flag in ("--source", "--out_dir", "--val_frac", "--seed", "--encoding", "--columns", "--policies",
                 "--skip_bad_lines", "--max_length", "--tokenizer"):
        assert flag in p.stdout, flag


def test_import_does_not_load_model():
    code = "import sys, medsft.data; print('medsft.model' in sys.modules)"
    eq(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip(), "False")


def test_sample_round_trip(tmp_path):
    p = run("--source", "sample", "--out_dir", tmp_path/"out")
    eq(p.returncode, 0)
    assert "rows in: 24, kept: 24" in p.stdout
    train, val = split_rows(sample_rows())
    eq(read_jsonl(tmp_path/"out"/"train.jsonl"), train)
    eq(read_jsonl(tmp_path/"out"/"val.jsonl"), val)
    msgs = read_jsonl(tmp_path/"out"/"val_messages.jsonl")
    eq([m["role"] for m in msgs[0]["messages"]], ["system", "user", "assistant"])
    eq(msgs[0]["messages"][-1]["content"], f"<think>\n{val[0]['think']}\n</think>\n\n{val[0]['answer']}")
    eq(len(read_jsonl(tmp_path/"out"/"split_index.jsonl")), 24)


def test_real_slice_round_trip(tmp_path):
    d = shared()
    rows = read_jsonl(d/"data"/"delicate_medical_r1"/"val.jsonl")[:30]
    write_jsonl(rows, tmp_path/"slice.jsonl")
    p = run("--source", tmp_path/"slice.jsonl", "--out_dir", tmp_path/"out", "--tokenizer", d/"qwen3",
            "--max_length", 512)
    eq(p.returncode, 0)
    assert "too_long" in p.stdout  # most real rows exceed 512 tokens before the think is shortened
    train, val = split_rows(rows)
    eq((len(train), len(val)), (27, 3))
    eq([r["question"] for r in read_jsonl(tmp_path/"out"/"val.jsonl")], [r["question"] for r in val])
    eq([r["metrics"] for r in read_jsonl(tmp_path/"out"/"train.jsonl")], [r["metrics"] for r in train])
    fmt = read_jsonl(tmp_path/"out"/"val_format.jsonl")
    eq(fmt[0]["output"], "<think>\n" + val[0]["think"].strip("\n") + "\n</think>\n\n" + val[0]["answer"])
    rep = json.loads((tmp_path/"out"/"report.json").read_text(encoding="utf-8"))
    eq(rep["n_in"], rep["n_out"] + len(rep["dropped"]))
    assert "\\u" not in (tmp_path/"out"/"val.jsonl").read_text(encoding="utf-8")


def test_columns_mapping(tmp_path):
    src = tmp_path/"cot.jsonl"
    write_jsonl([{"Q": f"问题{i}", "CoT": "想一想", "R": "回答"} for i in range(10)], src)
    p = run("--source", src, "--out_dir", tmp_path/"out", "--columns", "question=Q,think=CoT,answer=R")
    eq(p.returncode, 0)
    eq(read_jsonl(tmp_path/"out"/"val.jsonl")[0]["think"], "想一想")
    one_line_error(run("--source", src, "--out_dir", tmp_path/"o2"), "unknown schema", "'Q'")


def test_non_utf8_file(tmp_path):
    src = tmp_path/"gbk.jsonl"
    src.write_bytes('{"question": "发烧", "think": "", "answer": "多喝水"}\n'.encode("gb18030"))
    one_line_error(run("--source", src, "--out_dir", tmp_path/"out"), str(src), "byte offset 14", "encoding")
    eq(run("--source", src, "--out_dir", tmp_path/"out", "--encoding", "gb18030").returncode, 0)


def test_bad_jsonl_line(tmp_path):
    src = tmp_path/"bad.jsonl"
    src.write_text('{"question": "Q1", "answer": "A1"}\n{"question": oops}\n{"question": "Q2", "answer": "A2"}\n',
                   encoding="utf-8")
    one_line_error(run("--source", src, "--out_dir", tmp_path/"out"), f"{src}:2")
    p = run("--source", src, "--out_dir", tmp_path/"out", "--skip_bad_lines")
    eq(p.returncode, 0)
    assert "bad lines skipped: 1" in p.stdout


def test_modelscope_offline_fails_fast(tmp_path):
    p = run("--source", "krisfu/delicate_medical_r1_data", "--out_dir", tmp_path/"out",
            env={"MEDSFT_CACHE": str(tmp_path/"cache"), "MODELSCOPE_DOMAIN": "modelscope.invalid"})
    one_line_error(p, "krisfu/delicate_medical_r1_data", "--source PATH")
