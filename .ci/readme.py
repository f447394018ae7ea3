"""Write README.md from nbs/index.ipynb without Quarto (`nbdev_readme` needs it).

Markdown cells are copied; code cells become fenced Python with their text outputs; cells whose first
line is `#| hide` are left out and other `#|` directive lines are dropped, as nbdev does.
Usage: python .ci/readme.py [--check]   (--check: exit 1 when README.md is out of date)
"""
import json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent

def cell_md(cell):
    src = ''.join(cell['source']).splitlines()
    if src and src[0].replace(' ', '').startswith('#|hide'): return None
    if cell['cell_type'] == 'markdown': return '\n'.join(src)
    if cell['cell_type'] != 'code': return None
    code = '\n'.join(l for l in src if not l.replace(' ', '').startswith('#|')).strip()
    parts = [f'```python\n{code}\n```'] if code else []
    for out in cell.get('outputs', []):
        text = out.get('text') or out.get('data', {}).get('text/plain')
        if text: parts.append('```\n' + ''.join(text).rstrip() + '\n```')
    return '\n\n'.join(parts) or None

def render():
    nb = json.loads((root/'nbs'/'index.ipynb').read_text(encoding='utf-8'))
    body = '\n\n'.join(md for md in map(cell_md, nb['cells']) if md)
    note = '<!-- generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file -->\n\n'
    body = re.sub(r'\]\((\d\d\w*\.ipynb)\)', r'](nbs/\1)', body)  # notebook links, relative to the repository root
    return note + body.strip() + '\n'

if __name__ == '__main__':
    new, path = render(), root/'README.md'
    if '--check' in sys.argv:
        if path.read_text(encoding='utf-8') != new:
            sys.exit('README.md is out of date with nbs/index.ipynb: run `python .ci/readme.py`')
    else: path.write_text(new, encoding='utf-8')
