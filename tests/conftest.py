"""Fixtures shared by the pytest files: the repository root, ../shared (read-only real data), one trained tiny model
(full, LoRA, merged) per session, and `cli` to call a console script in this process."""
import contextlib, io, os
from types import SimpleNamespace
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent

@pytest.fixture(scope='session')
def root(): return ROOT

@pytest.fixture(scope='session')
def shared():
    "`../shared` beside the checkout (or $MEDSFT_SHARED); a test needing it fails under CI=true, else skips."
    path = Path(os.environ.get('MEDSFT_SHARED', ROOT.parent/'shared'))
    if not (path/'data'/'delicate_medical_r1'/'val.jsonl').exists():
        msg = f'../shared not found at {path}'
        if os.environ.get('CI') == 'true': pytest.fail(msg)
        pytest.skip(msg)
    return path


def cli(command, *args):
    """Run a console script's entry point (`command.main`) in this process, as the shell would run it: the result
    has `returncode` (0, or the `SystemExit` code), `stdout` and `stderr` (text). A subprocess costs seconds of
    imports; a test whose subject is the process itself (a kill, a console encoding, a launcher) starts one."""
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: command.main([str(a) for a in args])
        except SystemExit as e: code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


# the `trained` runs' settings (tests/test_regression.py repeats them): CPU, fp32 (no bf16 on this CPU), seed 42
TRAINED_KW = dict(train_file='sample', val_file='', max_train_rows=8, max_length=256, max_steps=2, save_steps=1,
                  eval_steps=1000, logging_steps=1, num_predict=0, progress=False, swanlab_mode='disabled')


@pytest.fixture(scope='session')
def trained(tmp_path_factory):
    """One small training run for every test that needs *a* trained folder: full SFT of the embedded tiny Qwen3 on 8
    sample rows (2 steps, a checkpoint after each), LoRA on top of it (2 steps), and the adapter merged. Read-only:
    a test that changes a folder copies it first."""
    from medsft.model import TINY
    from medsft.train_full import train_full
    from medsft.train_lora import merge_adapter, train_lora
    work, kw = tmp_path_factory.mktemp('trained'), TRAINED_KW
    with contextlib.redirect_stdout(io.StringIO()):
        full = train_full(model=TINY, output_dir=work/'full', **kw)
        lora = train_lora(model=str(full), output_dir=work/'lora', learning_rate=1e-2, **kw)
        merged = merge_adapter(lora, work/'merged')
    return dict(full=Path(full), lora=Path(lora), merged=Path(merged))
