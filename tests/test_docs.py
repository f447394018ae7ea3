"""The documentation site builds offline: a page per notebook naming its module's public API, and every link
between its pages (and every anchor) resolves."""
import html as htmllib, re, subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse
import pytest

pytestmark = pytest.mark.slow  # builds the whole site (about 15 s): the slow tier, with `make docs` by hand

def _default_exp(nb:Path):
    "The module a notebook exports to (`#| default_exp`), or None for pages without code (index)."
    m = re.search(r'#\|\s*default_exp\s+(\w+)', nb.read_text(encoding='utf-8'))
    return m[1] if m else None

NBS = {p.stem: _default_exp(p) for p in sorted((Path(__file__).resolve().parent.parent/'nbs').glob('[!_]*.ipynb'))}

@pytest.fixture(scope='module')
def site(root):
    r = subprocess.run(['bash', '.ci/docs.sh'], cwd=root, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return root/'_docs'

def _page(site, nb, mod):
    for name in (f'{mod}.html', f'{nb}.html'):
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

def test_links_resolve(site):
    "Every href to the site itself (relative, or to its published address) names a page and an id that exist."
    pages = {p.name: p.read_text(encoding='utf-8') for p in site.glob('*.html')}
    ids = {name: {htmllib.unescape(i) for i in re.findall(r'\sid="([^"]+)"', text)} for name, text in pages.items()}
    bad, n = [], 0
    for name, text in pages.items():
        for href in re.findall(r'href="([^"]*)"', text):
            href = htmllib.unescape(href)
            u = urlparse(href)
            if u.scheme in ('mailto', 'javascript') or (u.scheme and 'medsft.github.io' not in u.netloc): continue
            path = Path(u.path).name if u.scheme else u.path
            if path and not path.endswith('.html'):  # css, images, search.json
                assert (site/path).exists(), f'{name}: {href}'
                continue
            target, n = path or name, n + 1
            if target not in pages: bad.append(f'{name}: {href} (no page {target})'); continue
            if u.fragment and unquote(u.fragment) not in ids[target]: bad.append(f'{name}: {href} (no id)')
    assert n > 50, f'only {n} internal links found: is the crawler reading the pages?'
    assert not bad, f'{len(bad)} broken links of {n}:\n' + '\n'.join(bad[:30])
