"""Fixtures shared by the pytest files: the repository root and ../shared (read-only real data)."""
import os
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
