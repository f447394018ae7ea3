"""STYLE.md rules that break the docs build when ignored: a cell that imports holds only imports
(nbdev runs such cells to render the API docs), and no notebook hides a cell with `eval: false`."""
import ast, json
from pathlib import Path
import pytest

NBS = sorted(p for p in (Path(__file__).resolve().parent.parent/'nbs').glob('[!_]*.ipynb'))

def _code_cells(path):
    for i, c in enumerate(json.loads(path.read_text(encoding='utf-8'))['cells']):
        if c['cell_type'] == 'code': yield i, ''.join(c['source'])

def _tree(src):
    lines = [l for l in src.splitlines() if not l.lstrip().startswith(('!', '%'))]
    try: return ast.parse('\n'.join(lines))
    except SyntaxError: return None

@pytest.mark.parametrize('path', NBS, ids=lambda p: p.name)
def test_imports_alone_in_their_cells(path):
    bad = []
    for i, src in _code_cells(path):
        tree = _tree(src)
        if tree is None or 'nbdev_export()' in src: continue
        imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        if imports and len(imports) != len(tree.body): bad.append(i)
    assert not bad, f'{path.name}: cells {bad} mix imports with other code (STYLE.md; breaks nbdev docs)'

@pytest.mark.parametrize('path', NBS, ids=lambda p: p.name)
def test_no_eval_false(path):
    bad = [i for i, src in _code_cells(path) if 'eval: false' in src.replace('eval:false', 'eval: false')]
    assert not bad, f'{path.name}: cells {bad} use `#| eval: false`'

@pytest.mark.parametrize('path', NBS, ids=lambda p: p.name)
def test_shown_code_fits_the_page(path):
    "Code the docs show (not exported, not hidden) has lines of at most 100 characters: no horizontal scrolling."
    bad = [(i, len(l)) for i, src in _code_cells(path) if not src.startswith(('#| export', '#| hide'))
           for l in src.splitlines() if len(l) > 100]
    assert not bad, f'{path.name}: (cell, line length) over 100 characters: {bad[:10]}'
