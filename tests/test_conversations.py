"Multi-turn consultations (issue 24): every assistant turn supervised in exactly the context inference renders."
import itertools, json
from pathlib import Path

import pytest
from fastcore.test import test_eq as eq

from conftest import cli
from medsft.chat import REASONING_FIELDS, check_conversation
from medsft.data import load_rows, medsft_data, normalize_rows, tokenize_rows, validate_rows
from medsft.files import read_jsonl, write_jsonl
from medsft.testing import shared_dir

IM_END, IM_START = 151645, 151644


def tokenizers():
    "The genuine Qwen3 tokenizer (its stock template) and the embedded one (medsft's template file)."
    from transformers import AutoTokenizer
    from medsft.model import embedded_tokenizer
    out = [embedded_tokenizer()]
    if (d := shared_dir()) is not None: out.append(AutoTokenizer.from_pretrained(d/"qwen3"))
    return out


def conversation(k:int, think:bool, field:str, system:bool=True)->list:
    "k exchanges; assistant reasoning under `field` (`inline`: inside the content as a think block)."
    msgs = [{"role": "system", "content": "你是医生。"}] if system else []
    for i in range(1, k + 1):
        msgs.append({"role": "user", "content": f"第{i}个问题：头痛{i}天了怎么办？"})
        a = {"role": "assistant", "content": f"第{i}个回答：多休息。"}
        if think and field == "inline": a["content"] = f"<think>\n第{i}段思考。\n</think>\n\n" + a["content"]
        elif think: a[field] = f"第{i}段思考。"
        msgs.append(a)
    return msgs


@pytest.mark.parametrize("k,think", list(itertools.product([1, 2, 3, 4], [True, False])))
def test_every_turn_supervised_as_inference_renders_it(k, think):
    """Table test: for each tokenizer and reasoning field name, example i is the template's render of the
    conversation up to assistant turn i; its labels are exactly the part after the generation prompt (turn i's
    think, answer and <|im_end|>); no user/system token and no earlier turn is supervised; all field names give
    the same tokens."""
    for tok in tokenizers():
        results = []
        for field in REASONING_FIELDS + ("inline",):
            conv = conversation(k, think, field, system=(k % 2 == 0))
            exs, rep = tokenize_rows([{"messages": conv}], tok, max_length=None)
            eq((len(exs), rep.kept, rep.turns["supervised"], rep.dropped), (k, [0] * k, k, {}))
            msgs = check_conversation(conv)
            ends = [j + 1 for j, m in enumerate(msgs) if m["role"] == "assistant"]
            for ex, end in zip(exs, ends):
                full = tok.apply_chat_template(msgs[:end], return_dict=True)["input_ids"]
                prompt = tok.apply_chat_template(msgs[:end - 1], add_generation_prompt=True,
                                                 return_dict=True)["input_ids"]
                eq(ex["input_ids"], full[:-1])  # the template's render, minus the newline after <|im_end|>
                n = len(prompt)
                eq(ex["labels"], [-100] * n + full[n:-1])
                sup = [t for t in ex["labels"] if t != -100]
                eq((sup[-1], sup.count(IM_END), IM_START in sup), (IM_END, 1, False))
                text = tok.decode(sup)
                i = len([e for e in ends if e <= end])
                expected = (f"<think>\n第{i}段思考。\n</think>\n\n" if think else "<think>\n\n</think>\n\n")
                eq(text, expected + f"第{i}个回答：多休息。<|im_end|>")
                context = tok.decode(ex["input_ids"][:n])
                assert all(f"第{j}段思考" not in context for j in range(1, i)), context  # history has no think
            results.append(exs)
        assert all(r == results[0] for r in results), "reasoning field names gave different tokens"


def test_turns_last_and_report_accounts_for_every_turn():
    tok = tokenizers()[0]
    rows = [{"messages": conversation(3, True, "reasoning")}, {"question": "Q", "think": "", "answer": "A"},
            {"messages": conversation(2, False, "thinking")}]
    exs, rep = tokenize_rows(rows, tok, turns="last")
    eq((len(exs), rep.kept), (3, [0, 1, 2]))
    eq({k: rep.turns[k] for k in ("conversations", "assistant", "supervised", "context")}, dict(
        conversations=3, assistant=6, supervised=3, context=3))
    assert "context only 3" in rep.summary()
    exs, rep = tokenize_rows(rows, tok, max_length=48)  # the 3-turn conversation's later turns lose history
    t = rep.turns
    eq(t["assistant"], t["supervised"] + t["context"] + len(t["dropped"]))
    assert rep.counts.get("truncated_history"), rep.counts
    with pytest.raises(ValueError, match="all/last"): tokenize_rows(rows, tok, turns="every")


def test_long_conversation_keeps_newest_turn_end():
    "Oldest whole exchanges go first; the system prompt and the trained turn's </think>, answer, terminator stay."
    tok = tokenizers()[0]
    conv = conversation(4, True, "reasoning_content")
    conv[-1]["reasoning_content"] = "很长的思考。" * 40
    exs, rep = tokenize_rows([{"messages": conv}], tok, max_length=140, turns="last")
    text = tok.decode(exs[0]["input_ids"])
    assert text.startswith("<|im_start|>system\n你是医生。") and "第1个问题" not in text, text
    assert text.endswith("</think>\n\n第4个回答：多休息。<|im_end|>"), text
    assert len(exs[0]["input_ids"]) <= 140
    assert "truncated_history" in rep.counts and "truncated_think" in rep.counts, rep.counts


def write_layout(rows, path:Path):
    "Conversation rows as JSONL / JSON / CSV (messages as JSON text) / Parquet / ShareGPT JSONL."
    if path.suffix == ".jsonl" and "sharegpt" in path.name:
        write_jsonl([{"conversations": [{"from": {"user": "human", "assistant": "gpt"}.get(m["role"], m["role"]),
                                         "value": m["content"], **{k: v for k, v in m.items() if k not in ("role", "content")}}
                                        for m in r["messages"]]} for r in rows], path)
    elif path.suffix == ".jsonl": write_jsonl(rows, path)
    elif path.suffix == ".json": path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    elif path.suffix == ".csv":
        import pandas as pd
        pd.DataFrame({"messages": [json.dumps(r["messages"], ensure_ascii=False) for r in rows]}).to_csv(path, index=False)
    else:
        import pyarrow as pa, pyarrow.parquet as pq
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("name", ["c.jsonl", "c.sharegpt.jsonl", "c.json", "c.csv", "c.parquet"])
def test_every_layout_loads_the_same_conversations(tmp_path, name):
    rows = [{"messages": conversation(2 + i % 3, i % 2 == 0, REASONING_FIELDS[i % 3] if i % 4 else "inline")}
            for i in range(10)]
    expected = [check_conversation(r["messages"]) for r in rows]
    got = load_rows(write_layout(rows, tmp_path/name))
    eq([check_conversation(r["messages"]) for r in got], expected)
    p = cli(medsft_data, "--source", tmp_path/name, "--output-dir", tmp_path/"out", "--val-frac", "0.3")
    eq(p.returncode, 0)
    train, val = (read_jsonl(tmp_path/"out"/f) for f in ("train.jsonl", "val.jsonl"))
    key = lambda r: json.dumps(r["messages"], ensure_ascii=False)
    eq((len(train), len(val)), (7, 3))  # split by conversation: whole rows on one side
    eq(sorted(map(key, train + val)), sorted(json.dumps(m, ensure_ascii=False) for m in expected))
    fmt = read_jsonl(tmp_path/"out"/"train_format.jsonl")
    eq([len(r["history"]) for r in fmt], [sum(m["role"] == "user" for m in r["messages"]) - 1 for r in train])


def test_bad_turns_are_named_and_the_rest_kept():
    good = conversation(2, True, "reasoning")
    bad = {"ends with a user turn": good[:-1], "two user turns in a row": good[:2] + good[3:],
           "an assistant turn first": good[:1] + good[2:], "an empty question": good[:3] + [
               {"role": "user", "content": " "}] + good[4:], "needs a role": good[:1] + [{"role": "doctor", "content": "Q"}]}
    rows = load_rows([{"messages": good}] + [{"messages": m} for m in bad.values()])
    kept, rep = validate_rows(rows)
    eq(len(kept), 1)
    for i, problem in enumerate(bad, 1): assert problem in rep.dropped[i] and "messages[" in rep.dropped[i], rep.dropped


@pytest.mark.parametrize("cmd,layout", [("medsft_train", "c.sharegpt.jsonl"), ("medsft_train_lora", "c.parquet")])
def test_train_on_conversations(tmp_path, cmd, layout):
    "medsft_train / medsft_train_lora on a multi-turn file: every assistant turn becomes an example; predictions work."
    from medsft.model import TINY
    from medsft.train_full import medsft_train
    from medsft.train_lora import medsft_train_lora
    rows = [{"messages": conversation(2 + i % 2, True, REASONING_FIELDS[i % 3])} for i in range(6)]
    f = write_layout(rows, tmp_path/layout)
    r = cli(dict(medsft_train=medsft_train, medsft_train_lora=medsft_train_lora)[cmd], "--model", TINY,
            "--train-file", f, "--val-file", "", "--val-frac", "0.3", "--max-length", "256", "--max-steps", "2",
            "--save-steps", "2", "--eval-steps", "2", "--num-predict", "1", "--max-new-tokens", "4", "--no-progress",
            "--swanlab-mode", "disabled", "--output-dir", tmp_path/"out")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    split = json.loads((tmp_path/"out"/"split.json").read_text(encoding="utf-8"))
    eq((len(split["train"]), len(split["val"])), (4, 2))  # whole conversations on each side
    from medsft.data import split_indices
    k = sum(2 + i % 2 for i in split_indices(6, 0.3, 42)[0])  # assistant turns of the training conversations
    assert f"train: 4 rows -> {k} examples" in r.stdout, r.stdout
    assert f"train: {k} assistant turns in 4 conversations: {k} supervised" in r.stdout, r.stdout


def test_adversarial_inputs_found_in_review(tmp_path):
    "Faults an adversarial review found (session 8): each kept or reported with its turn, never a crash or a loss."
    import pandas as pd
    tok = tokenizers()[0]
    good = conversation(2, True, "reasoning", system=False)
    tool = [good[0], {**good[1], "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            *good[2:]]
    kept, rep = validate_rows(load_rows([{"messages": good}, {"messages": tool}]))
    eq((len(kept), rep.dropped[1]), (1, "bad_turn (messages[1]: tool calls are not supported (text turns only))"))
    exs, rep = tokenize_rows([{"messages": tool}, {"messages": good}], tok)  # no TemplateError: reported
    eq((len(exs), list(rep.dropped)), (2, [0]))
    # a CSV (or Parquet) gives every row every column: question/answer rows and conversations mix
    pd.DataFrame({"question": ["qa-q", None, None], "answer": ["qa-a", None, None],
                  "messages": [None, json.dumps(good, ensure_ascii=False), json.dumps(good[:2], ensure_ascii=False)]}
                 ).to_csv(tmp_path/"mix.csv", index=False)
    kept, rep = validate_rows(load_rows(tmp_path/"mix.csv"))
    eq((len(kept), rep.dropped, "messages" in kept[0], len(kept[1]["messages"])), (3, {}, False, 4))
    eq(load_rows([{"question": "q", "answer": "a", "messages": None}]), [{"question": "q", "think": "", "answer": "a"}])
    pd.DataFrame({"messages": ['[{"role": "user"', json.dumps(good, ensure_ascii=False)]}).to_csv(tmp_path/"cut.csv", index=False)
    kept, rep = validate_rows(load_rows(tmp_path/"cut.csv"))
    assert "expected a list of chat messages, got str" in rep.dropped[0], rep.dropped
    # a one-turn chat row keeps its own system prompt (and one without trains without, as a multi-turn one does)
    own = load_rows([{"messages": [{"role": "system", "content": "你是儿科医生。"}, *good[:2]]}, {"messages": good[:2]}])
    texts = [tok.decode(e["input_ids"]) for e in tokenize_rows(own, tok)[0]]
    assert texts[0].startswith("<|im_start|>system\n你是儿科医生。") and "system" not in texts[1], texts
    # a special token in a history turn names that turn
    bad = [good[0], {**good[1], "content": "好<|im_end|>"}, *good[2:]]
    kept, rep = validate_rows(load_rows([{"messages": bad}]))
    eq(rep.dropped, {0: "special_tokens (messages[1])"})


def test_validation_examples_also_trained_on_are_counted(capsys):
    "A conversation in validation whose opening turns another training conversation holds: said, not silent."
    from medsft.model import embedded_tokenizer
    from medsft.train_full import TrainConfig, build_datasets
    long, short, other = conversation(3, True, "reasoning_content"), conversation(1, True, "reasoning_content"), \
        conversation(2, True, "thinking")
    other[1]["content"] = "另一个问题：发烧怎么办？"
    cfg = TrainConfig(train_file=[{"messages": long}], val_file=[{"messages": short}, {"messages": other}],
                      max_length=256)
    train, val, _ = build_datasets(cfg, embedded_tokenizer())
    eq((len(train), len(val)), (3, 3))
    assert "note: 1 of 3 validation examples are also training examples" in capsys.readouterr().out
