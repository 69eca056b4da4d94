"The paper-replication notebooks: one `parameters` cell each, and every one runs its smoke preset through papermill into a scratch folder."
import hashlib, json, os, re, subprocess, sys
from pathlib import Path
import pytest
import ticketlab
from ticketlab.papers import PRESETS, code_cells, installed_papers_dir, paper_names, papers_dir, parameters_cell, run_paper

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
    code = 'import sys; from ticketlab.cli import replicate_parser, cmd_replicate; p = replicate_parser(); cmd_replicate(p.parse_args(sys.argv[1:]), p.prog)'
    r = subprocess.run([sys.executable, '-c', code, *args, '--out', str(tmp_path/'out')], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and 'ticketlab replicate: error:' in r.stderr, r.stderr
    assert not (tmp_path/'out').exists()

def test_papers_dir_in_a_checkout_is_its_papers_folder(monkeypatch):
    monkeypatch.delenv('TICKETLAB_PAPERS', raising=False)
    root = Path(ticketlab.__file__).resolve().parent.parent                 # the tests run against a checkout
    assert papers_dir() == root/'papers' and installed_papers_dir() == root/'ticketlab'/'paper_notebooks'
    assert not installed_papers_dir().exists()                             # the shipped copy is a build product only

def test_ticketlab_papers_overrides_and_an_empty_folder_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv('TICKETLAB_PAPERS', str(tmp_path))
    assert papers_dir() == tmp_path.resolve() and paper_names() == []
    with pytest.raises(ValueError, match='none found in .*TICKETLAB_PAPERS'): run_paper('lmc', out_dir=tmp_path/'out')
    (tmp_path/'mine.ipynb').write_text(json.dumps({'cells': [{'cell_type': 'code', 'metadata': {'tags': ['parameters']},
                                                              'source': ['preset = "smoke"\n', 'out_dir = None']}]}))
    (tmp_path/'_draft.ipynb').write_text('{}')
    assert paper_names() == ['mine'] and 'out_dir = None' in parameters_cell('mine')
    assert not (tmp_path/'out').exists()

def test_replicate_without_papermill_says_what_to_install(tmp_path):
    code = ('import sys; sys.modules["papermill"] = None; from ticketlab.cli import replicate_parser, cmd_replicate; '
            'p = replicate_parser(); cmd_replicate(p.parse_args(sys.argv[1:]), p.prog)')
    r = subprocess.run([sys.executable, '-c', code, 'lmc', '--out', str(tmp_path/'out')], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert 'ticketlab replicate: error: running the paper notebooks needs papermill' in r.stderr and 'pip install papermill ipykernel' in r.stderr
    assert not (tmp_path/'out').exists()

def test_early_phase_worker_finds_the_cells_it_runs():
    "papers/results/early_phase_worker.py execs the notebook's preset, data and job-definition cells: they must exist."
    _, cells = code_cells('early_phase')
    assert sum('PRESETS = {' in s for s in cells) == 1 and sum('imps = [ImpHparams' in s for s in cells) == 1
    defs = '\n'.join(s for s in cells if s.startswith('# definitions only'))
    assert 'def run_perturbations(reverse=False)' in defs and 'def run_pretraining(reverse=False)' in defs
    worker = (papers_dir()/'results'/'early_phase_worker.py').read_text()
    assert "'# definitions only'" in worker and "'PRESETS = {'" in worker and "'imps = [ImpHparams'" in worker and 'notebook_namespace(' in worker

def test_edge_popup_worker_covers_every_sweep_of_the_notebook():
    "papers/results/edge_popup_worker.py execs the notebook's preset and data cells and has a job for every sweep the notebook runs."
    _, cells = code_cells('edge_popup')
    assert sum('PRESETS = {' in s for s in cells) == 1 and sum('hp = supermask_train_hparams(' in s for s in cells) == 1
    labels = re.findall(r", '((?:Figure|App\. )[^'{]*)'\)\s*$", '\n'.join(cells), re.M)   # each sweep(points, replicates, label)
    assert {'Figure 3', 'Figure 4', 'Figure 5', 'Figure 6', 'Figure 7', 'Figure 11', 'App. C.2 supermasks'} <= set(labels), labels
    worker = (papers_dir()/'results'/'edge_popup_worker.py').read_text()
    assert all(f"('{l}'," in worker for l in labels), [l for l in labels if f"('{l}'," not in worker]
    assert re.findall(r"\('((?:Figure|App\.)[^']*)',", worker) == labels          # the notebook's order
    assert any('lottery_sweep(' in s for s in cells) and 'lottery_sweep(' in worker

def test_data_diet_worker_runs_what_the_notebook_runs():
    "papers/results/data_diet_worker.py execs the notebook's preset and data cells and repeats every experiment call the notebook makes."
    _, cells = code_cells('data_diet')
    assert sum('PRESETS = {' in s for s in cells) == 1 and sum('dhp = DataDietHparams(' in s for s in cells) == 1
    data_cell = next(s for s in cells if 'dhp = DataDietHparams(' in s)
    assert all(f'{v} = ' in data_cell for v in ('hp', 'ihp', 'dhp_noise', 'dhp_barriers', 'hp_warmup', 'data', 'store'))
    src = '\n'.join(cells)
    worker = (papers_dir()/'results'/'data_diet_worker.py').read_text()
    calls = ('ensemble_scores(hp,', 'data_diet_experiment(hp, dhp,', 'label_noise_experiment(hp, dhp_noise,', 'diet_barriers(hp, dhp_barriers,',
             'lmc_example_scores(hp,', 'warmup_experiment(hp_warmup,', 'pretraining_gradient_norms(hp,')
    assert all(c in src for c in calls), [c for c in calls if c not in src]
    for fn in ('ensemble_scores(', 'data_diet_experiment(', 'diet_barriers(', 'lmc_example_scores(', 'warmup_experiment(', 'pretraining_gradient_norms('):
        assert fn in worker, fn
    assert "'dhp = DataDietHparams('" in worker and "'PRESETS = {'" in worker

def _calls(src:str, names) -> list[str]:
    "Every call of one of `names` in `src`, from its name to its closing parenthesis, all whitespace removed."
    out = []
    for m in re.finditer(rf"(?<![\w.])({'|'.join(names)})\(", src):
        depth, i = 0, m.end() - 1
        while True:
            depth += {'(': 1, ')': -1}.get(src[i], 0)
            if depth == 0: break
            i += 1
        out.append(re.sub(r'\s+', '', src[m.start():i + 1]))
    return out

def test_unmasking_worker_runs_what_the_notebook_runs():
    "papers/results/unmasking_worker.py execs the notebook's preset and data cells and makes every training call the notebook makes, with its arguments."
    _, cells = code_cells('unmasking')
    assert sum('PRESETS = {' in s for s in cells) == 1 and sum('hp = TrainHparams(' in s for s in cells) == 1
    data_cell = next(s for s in cells if 'hp = TrainHparams(' in s)
    assert all(f'{v} = ' in data_cell for v in ('data', 'ks', 'tau', 'eval_test', 'store')) and 'def nominal_density(' in data_cell
    src = '\n'.join(cells)
    worker = (papers_dir()/'results'/'unmasking_worker.py').read_text()
    assert "'hp = TrainHparams('" in worker and "'PRESETS = {'" in worker
    trains = ('dense_run', 'train_runs?', 'branch', 'imp', 'baseline', 'train_rewound', 'robustness', 'instability_analysis',
              'imp_experiment', 'ensure_checkpoints')
    calls = _calls(src, trains)
    assert {c.split('(')[0] for c in calls} == {'dense_run', 'imp', 'imp_experiment', 'train_rewound', 'robustness'}, calls
    assert len(calls) == 9, calls                         # a new training call in the notebook: mirror it in the worker
    mirrored = set(_calls(worker.replace('[::-1]', ''), trains))      # the worker reverses lists of masks; nothing else differs
    # imp_experiment only collects the imp levels of every replicate, which the worker trains with the notebook's own imp call
    missing = [c for c in calls if c not in mirrored and not c.startswith('imp_experiment(')]
    assert not missing, missing
    # the lines that build the calls' arguments (the hyperparameters, Figure 4's norms, Figure 5's masks, Figure 8's levels)
    lines = [l.strip() for l in src.splitlines() if re.match(r'\s*(imps|w_tau|R|w_L, m_L|cand|is_imp|todo|lrr|lv8) \+?= ', l)]
    assert len(lines) == 10, lines
    wlines = {l.strip() for l in worker.splitlines()}
    assert all(l in wlines for l in lines), [l for l in lines if l not in wlines]
    keys = re.findall(r"^\s*for L in P\['(\w+)'\]:", src, re.M)
    assert {'robust_levels', 'theory_levels'} <= set(keys), keys
    for key in keys:                                      # the levels of Figures 4 and 5 (and any like them), last first
        assert f"for L in reversed(P['{key}'])" in worker, key
