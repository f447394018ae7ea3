"Multiple-choice evaluation (medsft.multiple_choice) on the real CMMLU medical subjects in ../shared: scoring, chance level, CLI."
import json, math, os, subprocess, sys, time
from pathlib import Path
from types import SimpleNamespace

import pytest, torch
from fastcore.test import test_eq as eq
from transformers import AutoTokenizer, GenerationConfig

from conftest import cli
from medsft.commands import medsft_eval
from medsft.files import DataError
from medsft.inference import clear_predictors, get_predictor
from medsft.model import IM_END_ID, TINY, tiny_qwen3
from medsft.multiple_choice import (CMMLU_MEDICAL, benchmark_report, evaluate_choices, format_question, letter_token_ids,
                                    load_benchmark, read_choices)

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def cmmlu(shared):
    "The nine CMMLU medical subjects, read from ../shared (never copied)."
    return load_benchmark("cmmlu-medical", data_dir=shared / "data" / "cmmlu_medical")


def run(*args):
    "`medsft_eval` with these flags, in this process (`conftest.cli`): returncode, stdout, stderr."
    return cli(medsft_eval, *args)


def test_all_questions_read(cmmlu):
    "1,815 test questions and 5 dev questions in each of the nine subjects, every answer among A-D."
    eq(list(cmmlu), list(CMMLU_MEDICAL))
    eq(sum(len(b["test"]) for b in cmmlu.values()), 1815)
    eq({len(b["dev"]) for b in cmmlu.values()}, {5})
    eq({r["answer"] for b in cmmlu.values() for r in b["test"]}, set("ABCD"))


def test_letter_ids_are_the_real_qwen3_ids(shared):
    "The ids used for scoring are what the real Qwen3 tokenizer files give for 'A' and ' A', and the embedded one agrees."
    real = AutoTokenizer.from_pretrained(shared / "qwen3")
    want = [[real.convert_tokens_to_ids(k), real.convert_tokens_to_ids("Ġ" + k)] for k in "ABCD"]
    eq(want, [[32, 362], [33, 425], [34, 356], [35, 422]])
    eq(letter_token_ids(real), want)
    eq(letter_token_ids(get_predictor(TINY).tokenizer), want)


class StandIn(torch.nn.Module):
    "A 'model' whose next-token logits favour `choose(user_turn)`'s letter (the bare-letter token)."
    def __init__(self, tokenizer, choose):
        super().__init__()
        self.tok, self.choose, self.device, self.dtype = tokenizer, choose, torch.device("cpu"), torch.float32
        self.generation_config = GenerationConfig(eos_token_id=IM_END_ID)
    def forward(self, input_ids, attention_mask=None, logits_to_keep=0, **kwargs):
        logits = torch.zeros(len(input_ids), 1, len(self.tok))
        for b, ids in enumerate(input_ids.tolist()):
            user = self.tok.decode(ids).rsplit("<|im_start|>user\n", 1)[1].split("<|im_end|>")[0]
            logits[b, 0, self.tok.convert_tokens_to_ids(self.choose(user))] = 10.0
        return SimpleNamespace(logits=logits)


def test_stand_in_models_score_exactly(cmmlu):
    "Gold-letter oracle: 100% in every subject; always-A: exactly the share of A answers (all 1,815 questions)."
    tok = get_predictor(TINY).tokenizer
    gold = {}
    for b in cmmlu.values():
        for r in b["test"]: gold.setdefault(format_question(r, b["name"]), set()).add(r["answer"])
    def oracle(user):
        assert len(gold[user]) == 1, user  # the same question and options with two answers: no oracle possible
        return next(iter(gold[user]))
    res = evaluate_choices((StandIn(tok, oracle), tok), cmmlu, batch_size=64)
    eq({s: v["accuracy"] for s, v in res["subjects"].items()}, {s: 1.0 for s in CMMLU_MEDICAL})
    res = evaluate_choices((StandIn(tok, lambda user: "A"), tok), cmmlu, batch_size=64)
    for s, b in cmmlu.items(): eq(res["subjects"][s]["correct"], sum(r["answer"] == "A" for r in b["test"]))
    eq(res["overall"]["correct"], 454)  # the A answers among the 1,815 (PROVENANCE.md lists the files)


def test_untrained_tiny_model_is_at_chance(cmmlu, tmp_path):
    "The embedded tiny model (random weights, seed 0) scores within the 99% binomial interval around 25% on all 1,815."
    t0 = time.perf_counter()
    res = evaluate_choices(TINY, cmmlu, batch_size=32, out_file=tmp_path / "records.jsonl")
    seconds = time.perf_counter() - t0
    n, half = 1815, 2.5758293035489 * math.sqrt(0.25 * 0.75 / 1815)
    eq(res["overall"]["n"], n)
    acc = res["overall"]["accuracy"]
    assert 0.25 - half <= acc <= 0.25 + half, (acc, 0.25 - half, 0.25 + half)
    print(f"untrained tiny model: {acc:.4f} on {n} questions in {seconds:.0f} s (load included)")


def test_cli_side_by_side_with_a_fine_tune(shared, trained, tmp_path):
    "tiny-qwen3 vs a short full fine-tune of it (the session's): one command, every subject, the paired test."
    tuned = trained["full"]
    data = shared / "data" / "cmmlu_medical"
    p = run("--benchmark", "cmmlu-medical", "--data-dir", data, "-c", TINY, "-c", tuned,
            "--limit", 4, "--json", "-o", tmp_path / "eval")
    eq(p.returncode, 0)
    out = json.loads(p.stdout)
    eq(len(out["checkpoints"]), 2)
    for r in out["checkpoints"]:
        eq(list(r["subjects"]), list(CMMLU_MEDICAL))
        eq({v["n"] for v in r["subjects"].values()}, {4})
        eq(r["overall"]["n"], 36)
        for v in [*r["subjects"].values(), r["overall"]]: assert v["ci_low"] <= v["accuracy"] <= v["ci_high"], v
    diffs = out["differences"]
    eq(list(diffs), [*CMMLU_MEDICAL, "overall"])
    for s, d in diffs.items():
        assert 0 <= d["p_value"] <= 1 and d["verdict"] in ("better", "worse", "within noise"), d
        eq(round(100 * (d["second"] - d["first"]), 2), d["difference"])
    # the same command again, as a table: every record is on disk already, so nothing is recomputed
    text, again = benchmark_report([TINY, tuned], "cmmlu-medical", out_dir=tmp_path / "eval", data_dir=data, limit=4)
    eq(again["checkpoints"][0]["answered_now"] + again["checkpoints"][1]["answered_now"], 0)
    eq(again["differences"], diffs)
    lines = text.splitlines()
    eq([l.split()[0] for l in lines[1:11]], [*CMMLU_MEDICAL, "overall"])
    assert "verdict" in lines[0], lines[0]


def test_cli_think_mode_reports_parsing(shared, tmp_path):
    "--mode think: the finished rate and the none/several counts are reported; an unfinished answer counts wrong."
    p = run("--benchmark", "cmmlu-medical", "--data-dir", shared / "data" / "cmmlu_medical",
            "-c", TINY, "--limit", 1, "--mode", "think", "-m", 6, "--json", "-o", tmp_path / "eval")
    eq(p.returncode, 0)
    r = json.loads(p.stdout)["checkpoints"][0]
    eq((r["overall"]["n"], r["finished"], r["none"] + r["several"], r["overall"]["correct"]), (9, 0.0, 9, 0))


def test_cli_user_errors(tmp_path):
    "A bad benchmark file or folder: exit 2, one line on stderr naming the file and line, before any model loads."
    bench = tmp_path / "bench"
    (bench / "test").mkdir(parents=True)
    (bench / "test" / "x.csv").write_text(",Question,A,B,C,D,Answer\n0,问,甲,乙,丙,丁,A\n1,问,甲,乙,丙,丁,E\n",
                                          encoding="utf-8")
    (tmp_path / "q.jsonl").write_text('{"question": "问", "A": "甲", "B": "乙"}\n', encoding="utf-8")
    cases = [(["--benchmark", bench], ["x.csv:3", "answer 'E' is not among the options A, B, C, D"]),
             (["--benchmark", tmp_path / "q.jsonl"], ["q.jsonl:1", "no field 'answer'"]),
             (["--benchmark", "cmmlu-medical", "--data-dir", tmp_path / "none"], ["no such benchmark folder", "none"]),
             (["--benchmark", bench, "--mode", "guess"], ["mode must be"])]
    for args, needles in cases:
        p = run(*args, "-c", tmp_path / "no-model")
        eq(p.returncode, 2)
        lines = p.stderr.strip().splitlines()
        eq(len(lines), 1)
        for n in needles: assert n in lines[0], (n, lines[0])
    with pytest.raises(DataError, match="q.jsonl:1: no field 'answer'"): read_choices(tmp_path / "q.jsonl")



def test_options_are_the_contiguous_non_empty_letters(tmp_path):
    "Issue 22 §2: a BOM never makes CMMLU's index column an option; an empty trailing cell is no option; a gap fails."
    (tmp_path / "bom.csv").write_text(",Question,A,B,C,D,E,Answer\n0,问一,甲,乙,丙,丁,戊,E\n1,问二,甲,乙,丙,丁,,B\n",
                                      encoding="utf-8-sig")
    rows = read_choices(tmp_path / "bom.csv")
    eq([r["options"] for r in rows], [dict(zip("ABCDE", "甲乙丙丁戊")), dict(zip("ABCD", "甲乙丙丁"))])
    eq([r["question"] for r in rows], ["问一", "问二"])
    (tmp_path / "gap.csv").write_text(",Question,A,B,C,D,Answer\n0,问,甲,乙,丙,丁,A\n1,问,甲,,丙,丁,A\n",
                                      encoding="utf-8")
    with pytest.raises(DataError, match=r"gap.csv:3: options must be lettered A, B, C, ... without a gap; got A, C, D"):
        read_choices(tmp_path / "gap.csv")
    (tmp_path / "gap.jsonl").write_text('{"question": "问", "A": "甲", "C": "丙", "answer": "A"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="gap.jsonl:1: options must be lettered"): read_choices(tmp_path / "gap.jsonl")

def test_resume_skips_done_questions_but_not_after_retraining(tmp_path):
    "Records of an interrupted run are reused by the rerun; after the folder is rewritten, nothing is reused."
    bench = tmp_path / "bench"
    (bench / "test").mkdir(parents=True)
    rows = "".join(f"{i},问题{i},甲,乙,丙,丁,{'ABCD'[i % 4]}\n" for i in range(6))
    (bench / "test" / "x.csv").write_text(",Question,A,B,C,D,Answer\n" + rows, encoding="utf-8")
    model = tiny_qwen3(tmp_path / "m", seed=3)
    clear_predictors()
    first = evaluate_choices(model, bench, out_file=tmp_path / "r.jsonl", batch_size=2)
    eq(first["answered_now"], 6)
    lines = (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()
    (tmp_path / "r.jsonl").write_text("\n".join(lines[:4]) + "\n" + lines[4][:20], encoding="utf-8")  # killed mid-write
    again = evaluate_choices(model, bench, out_file=tmp_path / "r.jsonl", batch_size=2)
    eq((again["answered_now"], [r["prediction"] for r in again["records"]]),
       (2, [r["prediction"] for r in first["records"]]))
    tiny_qwen3(tmp_path / "m", seed=4)  # retrained into the same folder
    eq(evaluate_choices(model, bench, out_file=tmp_path / "r.jsonl", batch_size=2)["answered_now"], 6)


def test_cli_jsonl_with_a_column_mapping(tmp_path):
    "A CMExam/MedQA-style JSONL file (question, options list, answer under other names) through --columns."
    rows = [dict(q="缺铁会导致", opts=["贫血", "骨折", "近视"], gold="A"), dict(q="缺碘会导致", opts=["近视", "甲状腺肿", "骨折"], gold="b")]
    src = tmp_path / "med.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    # the one mapping grammar of every command: key=value pairs (or a JSON object, see 00a_cli)
    p = run("--benchmark", src, "--columns", "question=q,options=opts,answer=gold",
            "-c", TINY, "--json", "-o", tmp_path / "eval")
    eq(p.returncode, 0)
    r = json.loads(p.stdout)["checkpoints"][0]
    eq((list(r["subjects"]), r["overall"]["n"]), (["med"], 2))
    records = [json.loads(l) for l in (tmp_path / "eval" / "tiny-qwen3" / "med-loglik-0shot.jsonl").read_text(encoding="utf-8").splitlines()]
    eq([(x["answer"], len(x["scores"])) for x in records], [("A", 3), ("B", 3)])
    bad = run("--benchmark", src, "--columns", "{question: q}", "-c", TINY)
    eq(bad.returncode, 2)
    assert "argument --columns: not a JSON object" in bad.stderr, bad.stderr
