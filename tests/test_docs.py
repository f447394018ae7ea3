"""The documentation site builds offline: a page per notebook, each naming its module's public API."""
import re, shutil, subprocess
from pathlib import Path
import pytest

NBS = {'index': None, '00_data': 'data', '01_model': 'model', '02_train_full': 'train_full',
       '02a_speed': 'speed', '02b_bench': 'bench',
       '03_train_lora': 'train_lora', '04_inference': 'inference'}

@pytest.fixture(scope='module')
def site(root):
    r = subprocess.run(['bash', '.ci/docs.sh'], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return root/'_docs'

def _page(site, nb, mod):
    for name in (f'{nb}.html', f'{mod}.html'):
        if (site/name).exists(): return (site/name).read_text(encoding='utf-8')
    raise AssertionError(f'no page for {nb}.ipynb in {site}: {sorted(p.name for p in site.glob("*.html"))}')

@pytest.mark.parametrize('nb,mod', list(NBS.items()))
def test_page_per_notebook(site, nb, mod):
    html = _page(site, nb, mod or 'index')
    if mod is None: return
    api = __import__(f'medsft.{mod}', fromlist=['__all__']).__all__
    text = re.sub(r'<[^>]+>', ' ', html)
    missing = [n for n in api if not n.isupper() and n not in text]
    assert not missing, f'{nb} page does not name {missing}'
