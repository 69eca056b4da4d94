"""Render README.md from nbs/index.ipynb without Quarto (nbdev_readme needs Quarto).

python .ci/readme.py          # write README.md
python .ci/readme.py --check  # exit 1 if README.md is out of date
"""
import re, sys
from pathlib import Path
import nbformat

ROOT = Path(__file__).resolve().parent.parent
HEADER = '<!-- generated from nbs/index.ipynb by .ci/readme.py: edit the notebook, not this file -->\n\n'

def _directives(src):
    return {m[1].strip().split()[0] for m in re.finditer(r'^#\|\s*(.+)$', src, re.M)}

def _outputs(cell):
    out = []
    for o in cell.get('outputs', []):
        data = o.get('data', {})
        if o.get('output_type') == 'stream': out.append('```\n' + o['text'].rstrip() + '\n```')
        elif 'text/markdown' in data: out.append(data['text/markdown'].rstrip())
        elif 'text/plain' in data: out.append('```\n' + data['text/plain'].rstrip() + '\n```')
    return out

def render(nb_path=ROOT/'nbs'/'index.ipynb') -> str:
    nb = nbformat.read(nb_path, as_version=4)
    parts = []
    for cell in nb.cells:
        src = cell.source.strip()
        if cell.cell_type == 'markdown':
            parts.append(src)
            continue
        d = _directives(src)
        if d & {'hide', 'export', 'exporti', 'default_exp'}: continue
        code = re.sub(r'^#\|.*\n?', '', src, flags=re.M).strip()
        if code and 'hide_input' not in d: parts.append('```python\n' + code + '\n```')
        parts += _outputs(cell)
    return HEADER + '\n\n'.join(p for p in parts if p) + '\n'

if __name__ == '__main__':
    text, readme = render(), ROOT/'README.md'
    if '--check' in sys.argv:
        if not readme.exists() or readme.read_text() != text:
            sys.exit('README.md is out of date with nbs/index.ipynb: run python .ci/readme.py')
    else: readme.write_text(text)
