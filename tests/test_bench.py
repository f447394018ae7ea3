"medsft_bench end to end (short, tiny model, no time asserted) and the speed levers against the plain paths: PEFT, gradient accumulation, bf16."
import importlib.util, json, math, os

import pytest
import torch
from fastcore.test import test_eq as eq, test_close as close
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments

from medsft import speed
from medsft.commands import medsft_bench
from medsft.data import sample_rows, tokenize_rows
from medsft.model import load_tokenizer, peft_quiet, tiny_qwen3
from medsft.trainer import SFTTrainer

SHORT = ["--steps", "1", "--batch", "2", "--max-length", "256", "--data", "sample", "--hidden-size", "32",
         "--intermediate-size", "64", "--head_dim", "8", "--heldout-rows", "2"]


def test_help(capsys):
    with pytest.raises(SystemExit) as e: medsft_bench.main(["--help"])
    eq(e.value.code, 0)
    out = capsys.readouterr().out
    for f in ("--max-length", "--runs", "--repeats", "--model-config", "--config", "optimizer steps per run"): assert f in out, f


def test_bad_flag_exits_2(capsys):
    with pytest.raises(SystemExit) as e: medsft_bench.main(["--runs", "reference,nope"])
    eq(e.value.code, 2)
    err = capsys.readouterr().err.strip()
    assert err.startswith("medsft_bench: error:") and "nope" in err and "\n" not in err, err


@pytest.mark.slow  # three training paths (TRL's too): about 20 s; 02b_bench runs reference vs medsft in the fast tier
def test_short_run(tmp_path, capsys):
    "Every path trains (TRL's when installed: `make` installs it); medsft's fast defaults learn what `reference` learns."
    has_trl = importlib.util.find_spec("trl") is not None
    out = tmp_path/"bench.json"
    medsft_bench.main(SHORT + ["--output", str(out), "--json"])
    res = json.loads(out.read_text())
    printed = capsys.readouterr().out
    eq(json.loads(printed[printed.index("{\n"):]), res)  # --json: the JSON printed last is the JSON written
    runs = res["runs"][0]
    eq(sorted(runs), ["medsft", "reference"] + ["trl"] * has_trl)
    for name, r in runs.items():
        assert r["tokens_per_s"] > 0 and r["flops_per_s"] > 0 and 0 < r["utilisation"], (name, r)
        assert 0 <= r["padding_share"] < 1 and r["peak_memory_mb"] > 0 and math.isfinite(r["heldout_loss"]), (name, r)
    eq(runs["medsft"]["padding_share"], 0)
    eq(runs["medsft"]["supervised"], runs["reference"]["supervised"])
    close(runs["medsft"]["heldout_loss"], runs["reference"]["heldout_loss"], eps=1e-4 * runs["reference"]["heldout_loss"])
    assert {"medsft/reference"} | ({"medsft/trl", "reference/trl"} if has_trl else set()) <= set(res["ratios"]), res
    if os.environ.get("CI") == "true": assert has_trl, "CI installs the bench extra (make install): TRL must run"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tok = load_tokenizer("tiny-qwen3")
    ex = tokenize_rows(sample_rows()[:3], tok, max_length=256)[0]
    ex = [{k: v[:n] for k, v in e.items()} for e, n in zip(ex, (224, 150, 190))]
    batch = DataCollatorForSeq2Seq(tok, label_pad_token_id=-100)(ex)
    return tiny_qwen3(tmp_path_factory.mktemp("m")/"tiny", tie_word_embeddings=False), tok, batch


def _trainers(model, tok, tmp_path, accum=1):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", gradient_accumulation_steps=accum)
    return Trainer(model=model, args=args, processing_class=tok), SFTTrainer(model=model, args=args, processing_class=tok)


def test_sft_trainer_loss_equals_plain_under_accumulation(tiny, tmp_path):
    "With `num_items_in_batch` (gradient accumulation) both divide the summed loss by the step's token count."
    folder, tok, batch = tiny
    model = AutoModelForCausalLM.from_pretrained(folder)
    plain, fast = _trainers(model, tok, tmp_path, accum=4)
    n = torch.tensor(1000)
    a, b = plain.compute_loss(model, dict(batch), num_items_in_batch=n), fast.compute_loss(model, dict(batch), num_items_in_batch=n)
    close(b.item(), a.item(), eps=1e-5 * a.item())
    close(fast.compute_loss(model, dict(batch)).item(), model(**batch).loss.item(), eps=1e-4)


def test_sft_trainer_peft(tiny, tmp_path):
    "A LoRA-wrapped model: same loss and the same LoRA gradients as the model's own loss (tolerance 1e-4 relative)."
    import peft
    folder, tok, batch = tiny
    with peft_quiet():
        model = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(folder),
                                    peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    plain, fast = _trainers(model, tok, tmp_path)
    grads = []
    for t in (plain, fast):
        model.zero_grad()
        loss = t.compute_loss(model, dict(batch))
        loss.backward()
        grads.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}))
    (l0, g0), (l1, g1) = grads
    close(l1, l0, eps=1e-5 * l0)
    assert g0 and model.get_base_model().lm_head.weight.grad is None  # the frozen output layer gets no gradient
    worst = max(((g1[n] - g).norm() / g.norm()).item() for n, g in g0.items())
    assert worst < 1e-4, worst


def test_linear_cross_entropy_bf16_autocast():
    "Under bf16 autocast the chunked loss matches the plain bf16 logits + fp32 cross-entropy (measured: same loss, gradients 0.5% relative)."
    torch.manual_seed(0)
    hidden = torch.randn(2, 40, 64, requires_grad=True)
    weight = (0.05 * torch.randn(1000, 64)).requires_grad_()
    labels = torch.randint(0, 1000, (2, 40))
    labels[:, :10] = -100
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = torch.nn.functional.cross_entropy((hidden[:, :-1] @ weight.T).float().flatten(0, 1), labels[:, 1:].flatten())
        fast = speed.linear_cross_entropy(hidden, labels, weight, chunk_size=16)
    close(fast.item(), plain.item(), eps=2e-3 * plain.item())
    g_plain = torch.autograd.grad(plain, (hidden, weight))
    g_fast = torch.autograd.grad(fast, (hidden, weight))
    for a, b in zip(g_plain, g_fast): assert ((a - b).norm() / a.norm()).item() < 2e-2
