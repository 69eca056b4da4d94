"Sweeps: the local, submitit-local and inline executors, failing points, and the run store under concurrent and killed workers."
import os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pandas as pd, pytest, torch
from ticketlab.sweep import Grid, sweep, train_job, EXECUTORS
from ticketlab.store import Store, load_checkpoint, _stale
from ticketlab.train import TrainHparams

ROOT = Path(__file__).resolve().parent.parent          # subprocesses import this checkout's ticketlab
TINY = dict(training_steps='20it', precision='fp32')   # LeNet-300-100 on digits, 20 steps

def _same_results(a:pd.DataFrame, b:pd.DataFrame, cols=('run', 'test_accuracy', 'test_loss', 'train_loss')):
    pd.testing.assert_frame_equal(a[list(cols)].reset_index(drop=True), b[list(cols)].reset_index(drop=True))

@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "The tiny grid (two good points, one bad) swept inline into a store of its own."
    grid = Grid.product(lr=[0.05, 0.1, -1.0])
    res = sweep(train_job, grid, dict(store=str(tmp_path_factory.mktemp('inline')), **TINY), executor='inline', progress=False)
    return grid, res

def test_inline_sweep_keeps_the_points_that_did_not_fail(reference, tmp_path):
    grid, res = reference
    assert res.status.tolist() == ['ok', 'ok', 'failed'] and res.lr.tolist() == [0.05, 0.1, -1.0]
    assert res.error.tolist()[:2] == ['', ''] and res.error[2] == 'ValueError: lr: -1.0 is outside (0, None]'
    assert res.test_accuracy[:2].between(0.5, 1).all() and res.trained_from[:2].tolist() == [0, 0]
    # a point whose job is unknown to TrainHparams fails on its own too
    more = sweep(train_job, grid + [dict(lr=0.05, modle='x')], dict(store=str(tmp_path), **TINY), executor='inline',
                 csv=tmp_path/'sweep.csv', progress=False)
    assert more.status.tolist() == ['ok', 'ok', 'failed', 'failed'] and 'unknown field(s) modle' in more.error[3]
    assert pd.read_csv(tmp_path/'sweep.csv').status.tolist() == more.status.tolist()   # the table as it stood at the end

def test_local_executor_two_workers(reference, tmp_path):
    grid, ref = reference
    res = sweep(train_job, grid, dict(store=str(tmp_path), **TINY), executor='local', workers=2, progress=False)
    assert res.status.tolist() == ['ok', 'ok', 'failed'] and res.error[2] == ref.error[2]
    _same_results(res[:2], ref[:2])                                # fp32, one thread each: the same numbers as inline
    assert res.worker[:2].str.split(':').str[1].astype(int).ne(os.getpid()).all()   # in other processes

def test_submitit_local_executor(reference, tmp_path):
    pytest.importorskip('submitit', reason='submitit is not installed (pip install "ticketlab[cluster]")')
    grid, ref = reference
    res = sweep(train_job, Grid([grid[0], grid[2]]), dict(store=str(tmp_path/'runs'), **TINY), executor='submitit', cluster='local',
                folder=tmp_path/'logs', timeout_min=10, progress=False)
    assert res.status.tolist() == ['ok', 'failed'] and res.error[1] == ref.error[2]
    _same_results(res[:1], ref[:1])
    assert list((tmp_path/'logs').iterdir())                      # submitit's job folders

def test_unknown_executor_and_missing_submitit(monkeypatch):
    with pytest.raises(ValueError, match="unknown executor 'dask'; choose one of local, submitit, inline"): sweep(train_job, [{}], executor='dask')
    assert EXECUTORS == ('local', 'submitit', 'inline')
    monkeypatch.setitem(sys.modules, 'submitit', None)             # as if not installed
    with pytest.raises(ImportError, match=r'pip install "ticketlab\[cluster\]"'): sweep(train_job, [{}], executor='submitit', progress=False)

# -- the store under concurrent workers ------------------------------------------------------------------

def together(n:int, folder:str, **kw):
    "`train_job(**kw)` once `n` processes have arrived here: the points ask for their runs at the same moment."
    Path(folder, str(os.getpid())).touch()
    t0 = time.time()
    while len(os.listdir(folder)) < n and time.time() - t0 < 120: time.sleep(0.05)
    return train_job(**kw)

def test_concurrent_workers_train_each_run_once(tmp_path, monkeypatch):
    monkeypatch.setenv('TICKETLAB_HOME', str(tmp_path/'home'))     # one scratch store shared by the workers
    (tmp_path/'arrived').mkdir()
    points = [dict(replicates=2), dict(replicates=3), dict(replicates=3)]   # replicates 0, 1 asked by all, 2 by two
    res = sweep(together, points, dict(n=3, folder=str(tmp_path/'arrived'), training_steps='30it', precision='fp32'),
                executor='local', workers=3, progress=False)
    assert (res.status == 'ok').all() and len(res) == 8 and res.worker.nunique() == 3
    assert res.groupby('run').trained_from.count().tolist() == [1, 1, 1]    # each run trained by exactly one worker ...
    assert res.trained_from.dropna().tolist() == [0, 0, 0]                 # ... from the start
    for _, g in res.groupby('run'):                                        # ... and every worker got its results
        assert len(g[['test_accuracy', 'test_loss', 'train_accuracy', 'train_loss', 'step']].drop_duplicates()) == 1
    runs = Store(tmp_path/'home'/'runs').runs('train')
    assert len(runs) == 3 and not list((tmp_path/'home'/'runs').rglob('lock'))

KILLED = textwrap.dedent('''
    import sys, time
    from ticketlab.runs import train_run
    from ticketlab.store import Store
    from ticketlab.train import TrainHparams, Callback
    class Slow(Callback):                        # slow enough to be killed mid-run; the weights are the same
        def after_step(self, t): time.sleep(0.05)
    train_run(TrainHparams(training_steps='2ep', precision='fp32'), Store(sys.argv[1]), progress=False, save_every='5it', callbacks=[Slow()])
''')

def test_killed_workers_run_is_resumed_by_the_next(tmp_path):
    hp, store = TrainHparams(training_steps='2ep', precision='fp32'), tmp_path/'runs'
    run = Store(store).run('train', hp)
    p = subprocess.Popen([sys.executable, '-c', KILLED, str(store)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (run.path/'resume.pt').exists():
        assert p.poll() is None and time.time() - t0 < 120, f'the worker stopped before its first resume checkpoint: {p.stderr.read()}'
        time.sleep(0.02)
    p.send_signal(signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL and not run.done
    assert (run.path/'lock').exists() and _stale(run.path/'lock')          # its lock stays behind, stale
    k = load_checkpoint(run.path/'resume.pt')['step']
    assert 0 < k < 44
    # another process (this one) asks for the run: it takes the lock over and resumes at k
    res = sweep(train_job, [dict(lr=0.05)], dict(store=str(store), training_steps='2ep', precision='fp32'), executor='inline', progress=False)
    assert res.status.tolist() == ['ok'] and res.trained_from.tolist() == [k] and res.run[0] == run.name
    assert run.done and not (run.path/'lock').exists() and not (run.path/'resume.pt').exists()
    # ... to the same weights and history as an uninterrupted run
    full = sweep(train_job, [{}], dict(store=str(tmp_path/'full'), **TINY | dict(training_steps='2ep')), executor='inline', progress=False)
    assert full.trained_from.tolist() == [0]
    ref = Store(tmp_path/'full').run('train', hp)
    a, b = ref.weights(44), run.weights(44)
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    pd.testing.assert_frame_equal(ref.metrics(), run.metrics())
    _same_results(full, res)

# -- ticketlab sweep -----------------------------------------------------------------------------------------------

from ticketlab.cli import main

def run_main(capsys, *argv):
    try: code = main(list(argv))
    except SystemExit as e: code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err

BAD = [(['train', '--grid', 'lrr=0.1'], "unknown key 'lrr'; choose from"),
       (['train', '--grid', 'lr=0.1,-1'], 'lr=-1.0: lr: -1.0 is outside'),
       (['train', '--grid', 'model=resnet21'], 'resnet20'),
       (['train', '--executor', 'dask'], "unknown executor 'dask'; choose one of local, submitit, inline"),
       (['train', '--workers', '0'], '--workers must be >= 1'),
       (['train', '--option', 'timeout_min=5'], 'for --executor submitit'),
       (['notebook'], 'needs NAME, the paper: one of'),
       (['notebook', 'lmc', '--grid', 'preset=smoke,huge'], "unknown preset 'huge'; choose one of smoke, cpu, paper"),
       (['notebook', 'lmc', '--grid', 'replicates=1'], "unknown key 'replicates'; choose from"),
       (['notebook', 'lmc', '--lr', '0.1'], '--lr is for sweep train'),
       (['frob'], "invalid choice: 'frob'")]

@pytest.mark.parametrize('args,expect', BAD, ids=[' '.join(a) for a, _ in BAD])
def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, args, expect):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(capsys, 'sweep', *args, '--out', str(tmp_path/'out'))
    assert code == 2 and err.count('\n') == 1 and err.startswith('ticketlab sweep: error:') and expect in err, err
    assert list(tmp_path.iterdir()) == []

def test_cli_sweep_train_writes_csv_and_png(tmp_path, capsys, reference):
    code, out, err = run_main(capsys, 'sweep', 'train', '--grid', 'lr=0.05,0.1', '--training-steps', '20it', '--precision', 'fp32',
                              '--executor', 'inline', '--no-progress', '--store', str(tmp_path/'runs'), '--out', str(tmp_path/'out'))
    assert code == 0, err
    res = pd.read_csv(tmp_path/'out'/'sweep.csv')
    _same_results(res, reference[1][:2])
    assert (tmp_path/'out'/'sweep.png').stat().st_size > 1000 and '0.05' in out and 'wrote' in out

TINY_NB = '''{"cells": [
 {"cell_type": "code", "execution_count": null, "id": "a", "metadata": {"tags": ["parameters"]}, "outputs": [],
  "source": ["preset = \\"smoke\\"\\n", "out_dir = \\".\\"\\n", "n = 2"]},
 {"cell_type": "code", "execution_count": null, "id": "b", "metadata": {}, "outputs": [],
  "source": ["import os, pandas as pd\\n", "assert n > 0, 'n must be positive'\\n",
             "pd.DataFrame({'i': range(n), 'square': [i * i for i in range(n)]}).to_csv(os.path.join(out_dir, 'squares.csv'), index=False)"]}],
 "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}}, "nbformat": 4, "nbformat_minor": 5}'''

def test_cli_sweep_notebook(tmp_path, monkeypatch, capsys):
    "A notebook with a parameters cell stands in for a paper notebook: one point failing in the notebook."
    (tmp_path/'papers').mkdir(); (tmp_path/'papers'/'tiny.ipynb').write_text(TINY_NB)
    monkeypatch.setenv('TICKETLAB_PAPERS', str(tmp_path/'papers'))
    code, out, err = run_main(capsys, 'sweep', 'notebook', 'tiny', '--grid', 'n=2,3,0', '--executor', 'inline', '--no-progress', '--out', str(tmp_path/'out'))
    assert code == 1 and err.strip() == 'ticketlab sweep: point 2 failed: AssertionError: n must be positive', err
    res = pd.read_csv(tmp_path/'out'/'sweep.csv')
    assert res.n.tolist() == [2, 2, 3, 3, 3, 0] and res.status.tolist() == ['ok'] * 5 + ['failed']
    assert res.square[:5].tolist() == [0, 1, 0, 1, 4] and set(res.table[:5]) == {'squares'}
    assert (tmp_path/'out'/'preset=smoke,n=3'/'tiny.ipynb').exists() and not (tmp_path/'out'/'sweep.png').exists()
