"Console-script round trips and error contracts of `medsft_data` (medsft.data)."
import json, os, subprocess, sys
from pathlib import Path

import pytest
from fastcore.test import test_eq as eq

from conftest import cli
from medsft.data import medsft_data, split_rows, sample_rows
from medsft.files import read_jsonl, write_jsonl
from medsft.testing import shared_dir

CLI = str(Path(sys.executable).parent/"medsft_data")


def run(*args, env=None, cwd=None):
    "`medsft_data` in this process (`conftest.cli`); with `env`, in a process of its own (the environment is read at import)."
    if env is None and cwd is None: return cli(medsft_data, *args)
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
    for flag in ("--source", "--output-dir", "--val-frac", "--seed", "--encoding", "--columns", "--policies",
                 "--skip-bad-lines", "--max-length", "--tokenizer", "--refresh"):
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


def test_odd_sources(tmp_path):
    "Empty file, out_dir that is a file or the source folder, bad max_length, bad tokenizer: one-line errors."
    (tmp_path/"empty.jsonl").write_bytes(b" \n\n")
    one_line_error(run("--source", tmp_path/"empty.jsonl", "--out_dir", tmp_path/"o"), "empty.jsonl: no rows")
    assert not (tmp_path/"o").exists()  # nothing written on error
    src = write_jsonl([{"question": "Q", "answer": "A"}], tmp_path/"d"/"a.jsonl")
    one_line_error(run("--source", src, "--out_dir", src), "cannot create output_dir")
    one_line_error(run("--source", tmp_path/"d", "--out_dir", tmp_path/"d"), "is the source folder")
    one_line_error(run("--source", src, "--out_dir", tmp_path/"o", "--max_length", 0), "max_length must be a positive")
    one_line_error(run("--source", src, "--out_dir", tmp_path/"o", "--tokenizer", tmp_path/"nope"), "cannot load tokenizer")
    one_line_error(run("--source", src, "--out_dir", tmp_path/"o", "--policies", "too_long=drop"), "needs a tokenizer")


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_datasets_split_like_reference(tmp_path, n):
    "1-3 rows: no crash, int(0.9*n) train rows as in the reference (1 row -> 0 train), every row written once."
    rows = [{"question": f"Q{i}", "think": "R", "answer": "A"} for i in range(n)]
    src = write_jsonl(rows, tmp_path/"tiny.jsonl")
    p = run("--source", src, "--out_dir", tmp_path/"o")
    eq(p.returncode, 0)
    train, val = read_jsonl(tmp_path/"o"/"train.jsonl"), read_jsonl(tmp_path/"o"/"val.jsonl")
    eq(len(train), int(0.9 * n))
    eq(sorted(r["question"] for r in train + val), [r["question"] for r in rows])



def test_empty_split_side_is_warned(tmp_path):
    "Issue 22 §4: `medsft_data --val-frac 0.5` leaving train or val empty says which side, and what to change."
    import warnings
    rows = [{"question": f"Q{i}", "think": "R", "answer": "A"} for i in range(2)]
    one = write_jsonl(rows[:1], tmp_path/"one.jsonl")  # 1 row at 0.5: int(0.5) = 0 train rows
    with pytest.warns(UserWarning, match=r"one.jsonl: the train side of the split is empty .* lower --val-frac"):
        eq(cli(medsft_data, "--source", one, "-o", tmp_path/"a", "--val-frac", "0.5").returncode, 0)
    two = write_jsonl([{**rows[0], "answer": ""}, rows[1]], tmp_path/"two.jsonl")  # row 0 is val, and dropped
    with pytest.warns(UserWarning, match=r"two.jsonl: the val side of the split is empty .* raise --val-frac"):
        eq(cli(medsft_data, "--source", two, "-o", tmp_path/"b", "--val-frac", "0.5").returncode, 0)
    eq(read_jsonl(tmp_path/"b"/"val.jsonl"), [])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # both sides hold a row: no warning
        eq(cli(medsft_data, "--source", write_jsonl(rows, tmp_path/"ok.jsonl"), "-o", tmp_path/"c",
               "--val-frac", "0.5").returncode, 0)

def test_chat_and_parquet_sources(tmp_path):
    "A ShareGPT/OpenAI chat file and a parquet with list and null columns go through to train/val files."
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    chat = [{"conversations": [{"from": "human", "value": f"Q{i}"}, {"from": "gpt", "value": f"<think>\nR{i}\n</think>\n\nA{i}"}]}
            for i in range(5)] + [{"messages": [{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"A{i}"}]}
                                  for i in range(5, 10)]
    write_jsonl(chat, tmp_path/"chat.jsonl")
    eq(run("--source", tmp_path/"chat.jsonl", "--out_dir", tmp_path/"o1").returncode, 0)
    rows = read_jsonl(tmp_path/"o1"/"train.jsonl") + read_jsonl(tmp_path/"o1"/"val.jsonl")
    eq(sorted((r["question"], r["think"], r["answer"]) for r in rows),
       sorted((f"Q{i}", f"R{i}" if i < 5 else "", f"A{i}") for i in range(10)))
    pq.write_table(pa.table({"prompt": [f"Q{i}" for i in range(10)], "response": ["A"] * 10,
                             "tags": [["a", "b"]] * 10, "score": [None] + [1.5] * 9}), tmp_path/"p.parquet")
    p = run("--source", tmp_path/"p.parquet", "--out_dir", tmp_path/"o2")
    eq(p.returncode, 0)
    eq(read_jsonl(tmp_path/"o2"/"train.jsonl")[0]["tags"], ["a", "b"])
    p = run("--source", write_jsonl(chat + [{"messages": [{"role": "doctor", "content": "Q"}]}], tmp_path/"bad.jsonl"),
            "--out_dir", tmp_path/"o3")  # a bad conversation is dropped, named with its turn; the rest is kept
    eq(p.returncode, 0)
    assert "dropped row 11: bad_turn (messages[0] needs a role" in p.stdout, p.stdout


def test_tokenize_invariants_random_rows():
    """Property test (seeded, ~200 random rows and max_lengths): `tokenize_sft` raises `TooLongError`/`DataError`
    or gives an example that fits, masks the prompt, ends on one supervised <|im_end|>, supervises </think>."""
    import random
    from transformers import AutoTokenizer
    from medsft.data import tokenize_sft, tokenize_rows, to_messages, TooLongError
    from medsft.files import DataError
    tok = AutoTokenizer.from_pretrained(shared()/"qwen3")
    rng = random.Random(0)
    pieces = ["头痛", "发烧怎么办？", "嗯，用户问的是", "fever ", "\n", "  ", "。", "1.", "\\n", "＜/think＞", "</ THINK >",
              "<think>", "</think>", "<|im_end|>", "<|endoftext|>", "😀", "\t", "a" * 30, "β-受体"]
    weights = [8, 8, 8, 6, 3, 2, 4, 2, 1, 1, 1, 0.05, 0.05, 0.05, 0.05, 1, 1, 1, 2]
    text = lambda k: "".join(rng.choices(pieces, weights, k=rng.randint(0, k)))
    rows, n_fit, n_long, n_bad = [], 0, 0, 0
    for _ in range(200):
        row = {"question": text(12) or "Q", "think": text(60) if rng.random() < 0.7 else rng.choice(["", " ", "\n"]),
               "answer": text(25) or "A"}
        if not row["answer"].strip(): row["answer"] += "A"  # (empty rows: see the notebook's bad-input table)
        L, trunc = rng.choice([16, 32, 64, 128, 256, 2048, None]), rng.choice(["think", "think", "drop"])
        try: ex = tokenize_sft(row, tok, max_length=L, truncation=trunc)
        except TooLongError: n_long += 1; continue
        except DataError as e:
            assert (any(s in row[f] for s in ("<|im_end|>", "<|endoftext|>", "<think>", "</think>") for f in row)
                    or not row["question"].strip()), (row, e)
            n_bad += 1; continue
        n_fit += 1; rows.append(row)
        ids, labels = ex["input_ids"], ex["labels"]
        assert L is None or len(ids) <= L
        eq(len(ids), len(labels)); eq(ex["attention_mask"], [1] * len(ids))
        prompt = tok.apply_chat_template(to_messages(row)[:-1], add_generation_prompt=True)["input_ids"]
        eq(ids[:len(prompt)], prompt); eq(labels[:len(prompt)], [-100] * len(prompt))
        sup = labels[len(prompt):]
        assert -100 not in sup and sup == ids[len(prompt):]
        eq((sup[-1], sup.count(151645), 151668 in sup), (151645, 1, True))
        if ids != tok.apply_chat_template(to_messages(row))["input_ids"][:-1]:  # shortened: only the think changed
            assert row["think"].strip() and tok.decode(sup).endswith(f"</think>\n\n{row['answer'].lstrip(chr(10))}<|im_end|>")
    assert n_fit > 50 and n_long > 10 and n_bad > 5, (n_fit, n_long, n_bad)
    examples, rep = tokenize_rows(rows + [{"question": "Q", "answer": "A<|im_end|>"}, None], tok, max_length=2048)
    eq((rep.n_out, sorted(rep.dropped)), (len(rows), [len(rows), len(rows) + 1]))


def test_rows_compared_as_users_write_them():
    "Issue 22 §1: full-width and half-width forms are one question for the duplicate, repeat and overlap checks."
    from medsft.data import validate_rows, row_key
    rows = [dict(question="发烧怎么办？", think="", answer="多喝水。"), dict(question="发烧怎么办?", think="", answer="休息。"),
            dict(question="血压１４０", think="", answer="复查"), dict(question="血压140", think="", answer="复查")]
    kept, rep = validate_rows(rows, policies=dict(duplicate="drop", repeated_question="drop"))
    assert [r["question"] for r in kept] == ["发烧怎么办？", "血压１４０"], kept  # the originals, unchanged
    assert row_key(rows[2], normalize=True) == row_key(rows[3], normalize=True) != row_key(rows[2])


def test_tokenization_cache_key_is_stable_across_processes():
    "The cache key of `tokenize_cached` must not change between runs (a key with object ids would never hit)."
    import medsft.data as d
    from medsft.files import run_key
    here = run_key(sorted(d.code_sources(d.tokenize_rows).items()))
    code = "import medsft.data as d; from medsft.files import run_key; print(run_key(sorted(d.code_sources(d.tokenize_rows).items())))"
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.strip()
    eq(there, here)
