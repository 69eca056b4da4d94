"""The claims ledger (ticket_notes/) is traceable: every note's frontmatter parses (the docs site takes each page's
title and status from it), its status is one of the ledger's words, its notebook exists, it is listed in the index
(and the index lists nothing else), and every results file it names is committed."""
import re
from pathlib import Path
import pytest, yaml

ROOT = Path(__file__).resolve().parent.parent
NOTES = ROOT/'ticket_notes'
KEYS = ['title', 'paper', 'figure', 'notebook', 'status', 'preset', 'updated']
STATUSES = {'reproduced', 'partly', 'not', 'pending-GPU'}
notes = sorted(p for p in NOTES.glob('*.md') if p.name != 'README.md')

def _frontmatter(p:Path) -> dict:
    m = re.match(r'---\n(.*?)\n---\n', p.read_text(), re.S)
    assert m, f'{p.name}: no --- frontmatter --- block at the top'
    d = yaml.safe_load(m[1])
    assert isinstance(d, dict), f'{p.name}: the frontmatter is not a mapping'
    return d

def test_there_are_notes(): assert len(notes) >= 5

@pytest.mark.parametrize('p', notes, ids=lambda p: p.stem)
def test_frontmatter(p):
    d = _frontmatter(p)
    assert [k for k in KEYS if k not in d] == [], f'{p.name}: missing keys'
    assert str(d['status']).split()[0].rstrip(';,') in STATUSES, f"{p.name}: status {d['status']!r} starts with none of {STATUSES}"
    nb = str(d['notebook']).split(',')[0].strip()
    assert (ROOT/nb).exists(), f'{p.name}: notebook {nb} does not exist'
    assert p.stem.split('-')[0] == Path(nb).stem, f'{p.name}: named after another paper than its notebook {nb}'

def test_index_lists_every_note():
    index = set(re.findall(r'\]\(([\w.-]+\.md)\)', (NOTES/'README.md').read_text()))
    assert index == {p.name for p in notes}

@pytest.mark.parametrize('p', notes, ids=lambda p: p.stem)
def test_named_results_are_committed(p):
    text = p.read_text()
    paths = set(re.findall(r'papers/results/[\w./-]*\w', text))
    assert [q for q in paths if not (ROOT/q).exists()] == []
    slug, preset = p.stem.split('-')[0], _frontmatter(p)['preset']
    folder = ROOT/'papers'/'results'/f'{slug}-{preset}'
    bare = {n for n in re.findall(r'`([\w.-]+\.csv)`', text)}
    assert [n for n in bare if not (folder/n).exists() and not list((ROOT/'papers'/'results').glob(f'*/{n}'))] == []
