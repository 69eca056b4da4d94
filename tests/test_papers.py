"The paper-replication notebooks: one `parameters` cell each, and every one runs its smoke preset through papermill into a scratch folder."
import hashlib, json, os, subprocess, sys
from pathlib import Path
import pytest
from ticketlab.papers import PRESETS, paper_names, papers_dir, parameters_cell, run_paper

NAMES = paper_names()

def test_papers_found():
    assert {'early_phase', 'lmc'} <= set(NAMES), NAMES

@pytest.mark.parametrize('name', NAMES)
def test_one_parameters_cell_with_smoke_and_out_dir(name):
    src = parameters_cell(name)
    assert 'preset = "smoke"' in src and 'out_dir' in src

@pytest.mark.parametrize('name', NAMES)
def test_smoke_preset_runs_into_a_temporary_directory(name, tmp_path, monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')              # the kernel inherits it: tiny models, shared cores
    src = papers_dir()/f'{name}.ipynb'
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    nb = run_paper(name, 'smoke', out_dir=tmp_path/'out', output_notebook=tmp_path/f'{name}.ipynb')
    assert nb == (tmp_path/f'{name}.ipynb').resolve() and nb.exists()
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before          # never executed in place
    outs = {p.suffix for p in (tmp_path/'out').iterdir()}
    assert {'.png', '.csv'} <= outs, outs
    cells = json.loads(nb.read_text())['cells']
    text = ''.join(''.join(o.get('text', '')) for c in cells if c['cell_type'] == 'code' for o in c.get('outputs', []))
    assert 'preset: smoke' in text and 'hardware:' in text and 'date:' in text

def test_run_paper_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match='in place'): run_paper(NAMES[0], output_notebook=papers_dir()/f'{NAMES[0]}.ipynb')
    with pytest.raises(ValueError, match='choose one of smoke, cpu, paper'): run_paper(NAMES[0], 'gpu', out_dir=tmp_path)
    with pytest.raises(ValueError, match='unknown paper'): run_paper('nope', out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []

@pytest.mark.parametrize('args', [['nope'], ['lmc', '--preset', 'huge'], []])
def test_replicate_cli_bad_input(tmp_path, args):
    code = 'import sys; from ticketlab.papers import replicate_parser, cmd_replicate; p = replicate_parser(); cmd_replicate(p.parse_args(sys.argv[1:]), p.prog)'
    r = subprocess.run([sys.executable, '-c', code, *args, '--out', str(tmp_path/'out')], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and 'ticketlab replicate: error:' in r.stderr, r.stderr
    assert not (tmp_path/'out').exists()
