"The ticketlab command: bad input is one line, exit 2, nothing written; real tiny runs write their CSVs and PNGs into --out."
import os, subprocess, sys
import pandas as pd, pytest
from ticketlab.cli import CLI_DEFAULTS, COMMANDS, main

def ticketlab(*args, cwd, env=None):
    "`ticketlab *args` as a user runs it: in a subprocess, in folder `cwd`."
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # this checkout's ticketlab, whatever is installed
    path = os.pathsep.join([root] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
    return subprocess.run([sys.executable, '-m', 'ticketlab.cli', *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': path, **(env or {})}, timeout=900)

def run_main(capsys, *argv):
    "`ticketlab *argv` in this process: (exit status, stdout, stderr)."
    try: code = main(list(argv))
    except SystemExit as e: code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err

# --- bad input: one line, exit 2, nothing written -----------------------------------------------------------------

BAD = [
    ('train', ['--model', 'resnet21'], 'resnet20'),
    ('train', ['--dataset', 'imagenet'], 'cifar10'),
    ('train', ['--training-steps', '2000'], "'<N>it'"),
    ('train', ['--momentum', '1.0'], 'outside'),
    ('train', ['--dataset', 'imagefolder', '--data-root', '/no/such/folder'], '/no/such/folder'),
    ('train', ['--checkpoints', '0it,99ep'], 'after the end of training'),
    ('imp', ['--strategy', 'rewind'], 'choose one of wr, lrr, ft'),
    ('imp', ['--rewind-step', '99ep'], 'before the end of training'),
    ('imp', ['--baselines', 'shuffle'], 'choose from reinit, random_pruning'),
    ('imp', ['--replicates', '0'], '>= 1'),
    ('imp', ['--fraction', '1.5'], 'outside'),
    ('imp', ['--levels', 'many'], 'invalid int'),
    ('imp', ['--model', 'resnet21'], 'resnet20'),
    ('imp', ['--level', '2'], 'unrecognized arguments'),            # no abbreviation of --levels
    ('lmc', ['--children', '1'], 'outside [2'),
    ('lmc', ['--rewind-steps', '0it,99ep'], 'after the end of training'),
    ('lmc', ['--rewind-steps', '12'], "'<N>it'"),
    ('lmc', ['--splits', 'valid'], 'choose test, train'),
    ('lmc', ['--bn', 'recompute'], 'interpolate, reestimate'),
    ('lmc', ['--reference', 'mean'], 'chord, ends mean'),
    ('lmc', ['--model', 'resnet21'], 'resnet20'),
    ('lmc', ['--level', '3'], 'run `ticketlab imp`'),
    ('lmc', ['--level', '2', '--density', '0.5'], 'one of level and density'),
    ('lmc', ['--density', '1.5'], 'outside'),
    ('lmc', ['--strategy', 'rewind'], 'choose one of wr, lrr, ft'),
    ('lmc', ['--steps', '0it,1ep'], 'unrecognized arguments'),      # the old flags are gone
    ('lmc', ['--baseline', 'mean'], 'unrecognized arguments'),
    ('lmc', ['--plot', 'out.png'], 'unrecognized arguments'),
    ('lmc', ['--imp-strategy', 'wr'], 'unrecognized arguments'),
    ('lmc', ['--rewind-step', '1ep'], 'unrecognized arguments'),   # no abbreviation of --rewind-steps
    ('supermask', ['--method', 'zhou'], 'choose one of edge_popup, bernoulli'),
    ('supermask', ['--densities', '0.5,1.5'], '--densities: density: 1.5 is outside (0, 1]'),
    ('supermask', ['--densities', 'half'], 'comma-separated numbers'),
    ('supermask', ['--method', 'bernoulli', '--densities', '0.3,0.5'], 'the bernoulli mask has none'),
    ('supermask', ['--weight-init', 'xavier'], 'signed_kaiming_constant'),
    ('supermask', ['--bn', 'frozen'], 'nonaffine, learned'),
    ('supermask', ['--replicates', '0'], '>= 1'),
    ('supermask', ['--model', 'conv5'], 'conv4'),
    ('supermask', ['--density', '2'], 'outside'),
    ('scores', ['frobnicate'], "choose from 'compute', 'export', 'import', 'list'"),
    ('scores', [], '--steps: give t'),
    ('scores', ['--steps', '99ep'], 'after the end of training'),
    ('scores', ['--steps', '1it', '--kind', 'margin'], 'choose one of el2n, grand'),
    ('scores', ['--steps', '1it', '--K', '0'], 'K must be >= 1'),
    ('scores', ['--steps', '1it', '--name', '../x'], 'bad scores name'),
    ('scores', ['--steps', '1it', '--csv', 'x.csv'], 'belong to export and import'),
    ('scores', ['--steps', '1it', '--model', 'resnet21'], 'resnet20'),
    ('scores', ['export', '--csv', 'x.csv'], 'export: --name the saved scores'),
    ('scores', ['export', '--name', 'nope', '--csv', 'x.csv'], "no scores named 'nope'"),
    ('scores', ['export', '--name', 'nope'], 'give --npy FILE and/or --csv FILE'),
    ('scores', ['import'], 'give one of --npy FILE or --csv FILE'),
    ('scores', ['import', '--npy', 'none.npy'], 'no such file'),
    ('datadiet', [], 'rank the examples by saved scores'),
    ('datadiet', ['--scores', 'nope'], "no scores named 'nope'"),
    ('datadiet', ['--subsets', 'median'], 'choose from random, easiest, hardest'),
    ('datadiet', ['--subsets', 'random', '--sizes', '32'], 'fewer than one batch'),
    ('datadiet', ['--subsets', 'random', '--steps', '99ep'], 'after the end of training'),
    ('datadiet', ['--subsets', 'random', '--strategy', 'lrr'], "'wr'"),
    ('datadiet', ['--subsets', 'random', '--rewind-step', '5it'], "own t_r"),
    ('datadiet', ['--score-steps', '1it', '--kind', 'margin'], 'choose one of el2n, grand'),
    ('datadiet', ['--replicates', '0'], '>= 1'),
    ('datadiet', ['--lr', '0.1', '--pretrain-lr', '-1', '--subsets', 'random'], 'outside'),
    ('hessian', [], 'give RUN'),
    ('hessian', ['abc'], 'holds no runs'),
    ('hessian', ['abc', '--subspace', 'kept'], 'choose one of all, prunable, mask'),
    ('hessian', ['abc', '--split', 'valid'], 'choose one of train, test'),
    ('hessian', ['abc', '--dtype', 'float16'], 'choose one of float32, float64'),
    ('hessian', ['abc', '--trace-probes', '1'], 'outside [2'),
    ('hessian', ['abc', '--topk', '0'], 'outside [1'),
    ('hessian', ['abc', '--topk', '30', '--lanczos-iters', '20'], 'give at least 30'),
    ('hessian', ['abc', '--examples', 'all'], 'invalid int'),
    ('hessian', ['abc', '--list'], 'drop RUN'),
    ('replicate', ['nope'], 'choose one of data_diet, early_phase, edge_popup, lmc, unmasking'),
    ('replicate', ['lmc', '--preset', 'huge'], 'choose one of smoke, cpu, paper'),
    ('replicate', [], 'required: name'),
] + [(c, ['--device', 'gpu'], 'choose one of cpu') for c in ('train', 'imp', 'lmc', 'supermask', 'scores', 'datadiet', 'hessian')] \
  + [(c, ['--device', 'cuda:99'], 'not a device of this machine') for c in ('train', 'imp', 'lmc', 'supermask', 'scores', 'datadiet', 'hessian')]

@pytest.mark.parametrize('command,args,expect', BAD, ids=[f'{c} {" ".join(a)}' for c, a, _ in BAD])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, monkeypatch, capsys, command, args, expect):
    monkeypatch.chdir(tmp_path)                                  # where the default --out would go
    store = [] if command == 'replicate' else ['--store', str(tmp_path/'store')]
    code, out, err = run_main(capsys, command, *args, *store)
    assert code == 2
    assert err.count('\n') == 1 and err.startswith(f'ticketlab {command}: error:') and expect in err, err
    assert list(tmp_path.iterdir()) == []                        # no store, no ticketlab_out

@pytest.mark.parametrize('command', list(COMMANDS))
@pytest.mark.parametrize('where', ['a_file', 'a_file/out'])
def test_out_must_be_a_folder(tmp_path, monkeypatch, capsys, command, where):
    monkeypatch.chdir(tmp_path)
    (tmp_path/'a_file').write_text('')
    code, _, err = run_main(capsys, command, *({'replicate': ['lmc'], 'sweep': ['train']}.get(command, [])), '--out', str(tmp_path/where))
    assert code == 2 and err.count('\n') == 1 and 'a_file exists and is not a folder' in err, err
    assert [p.name for p in tmp_path.iterdir()] == ['a_file']

def test_bad_input_leaves_the_default_store_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path); monkeypatch.setenv('TICKETLAB_HOME', str(tmp_path/'home'))
    for command, args in [('train', ['--momentum', '1.0']), ('imp', ['--rewind-step', '99ep']), ('lmc', ['--level', '3'])]:
        code, _, err = run_main(capsys, command, *args)
        assert code == 2 and err.count('\n') == 1, err
    assert not (tmp_path/'home'/'runs').exists() and not (tmp_path/'ticketlab_out').exists()

def test_unknown_command(capsys):
    code, _, err = run_main(capsys, 'frobnicate')
    assert code == 2 and err.count('\n') == 1 and 'choose one of train, imp, lmc, perturb, pretrain, supermask, scores, datadiet, hessian, replicate, sweep' in err

# --- help ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('command', ['train', 'imp', 'lmc'])
def test_help_lists_models_data_sets_and_common_flags(capsys, command):
    code, out, _ = run_main(capsys, command, '--help')
    assert code == 0
    for s in ('lenet_300_100', 'resnet20', 'wrn_16_8', 'digits', 'cifar10', 'imagefolder', '--store', '--device', '--no-progress',
              '--out DIR', f'./ticketlab_out/{command}'):
        assert s in out, s

def test_flags_of_each_command():
    flags = {c: {o for a in COMMANDS[c][0]()._actions for o in a.option_strings} for c in COMMANDS}
    common = {'--store', '--device', '--no-progress', '--out'}
    for c in ('train', 'imp', 'lmc'): assert common <= flags[c] and '--training-steps' in flags[c], c
    assert '--checkpoints' in flags['train']
    assert {'--strategy', '--rewind-step', '--levels', '--fraction', '--replicates', '--baselines'} <= flags['imp']
    assert {'--rewind-steps', '--children', '--alphas', '--splits', '--bn', '--reference', '--threshold', '--level', '--strategy',
            '--density'} <= flags['lmc']
    assert {'--preset', '--log-output', '--out'} <= flags['replicate'] and not {'--store', '--device'} & flags['replicate']
    assert CLI_DEFAULTS['imp'] == dict(fraction=0.5, levels=8)
    assert {'--method', '--density', '--densities', '--weight-init', '--score-init', '--bn', '--prune-first', '--no-prune-last',
            '--eval-mask', '--replicates', '--dense-lr', '--no-dense', '--training-steps', '--lr'} | common <= flags['supermask']
    assert {'--kind', '--K', '--steps', '--score-steps', '--name', '--npy', '--csv', '--scores-dir', '--training-steps', '--model'} | common <= flags['scores']
    assert {'--subsets', '--sizes', '--steps', '--references', '--pretrain-lr', '--seed', '--strategy', '--levels', '--fraction', '--replicates',
            '--scores', '--score-steps', '--K', '--kind', '--scores-dir', '--lr', '--training-steps'} | common <= flags['datadiet']
    assert CLI_DEFAULTS['datadiet'] == dict(fraction=0.5, levels=3)
    assert {'--grid', '--executor', '--workers', '--cluster', '--option', '--replicates', '--lr', '--training-steps'} | common <= flags['sweep']
    assert {'--step', '--list', '--subspace', '--split', '--examples', '--batch-size', '--dtype', '--topk', '--lanczos-iters', '--trace-probes',
            '--density-probes', '--nodes', '--seed'} | common <= flags['hessian'] and '--training-steps' not in flags['hessian']

def test_top_level_help_as_a_user_runs_it(tmp_path):
    p = ticketlab('--help', cwd=tmp_path)
    assert p.returncode == 0 and all(c in p.stdout for c in COMMANDS) and 'lenet_300_100' in p.stdout
    p = ticketlab('lmc', '--help', cwd=tmp_path)
    assert p.returncode == 0 and '--rewind-steps' in p.stdout and '2%' in p.stdout
    assert list(tmp_path.iterdir()) == []

# --- real tiny runs on the digits ----------------------------------------------------------------------------------

def test_train_defaults_into_the_default_out(tmp_path):
    "The quick start: every default, and --out defaults to ./ticketlab_out/train."
    p = ticketlab('train', '--store', str(tmp_path/'store'), '--no-progress', cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    test_acc = float(next(l for l in p.stdout.splitlines() if l.startswith('test')).split()[1])
    assert test_acc >= 0.95
    assert f'stored in {tmp_path/"store"}' in p.stdout
    out = tmp_path/'ticketlab_out'/'train'
    m = pd.read_csv(out/'train.csv')
    assert list(m.columns) == ['step', 'epoch', 'split', 'loss', 'accuracy'] and m.epoch.max() == 30
    assert (out/'train.png').stat().st_size > 1000

def test_imp_writes_csv_and_png(tmp_path):
    p = ticketlab('imp', '--training-steps', '2ep', '--levels', '2', '--precision', 'fp32', '--replicates', '1', '--no-progress',
                  '--store', str(tmp_path/'store'), '--out', str(tmp_path/'out'), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert 'most extreme matching density' in p.stdout and 'IMP-WR (k=0it)' in p.stdout and 'IMP reaches' in p.stdout
    df = pd.read_csv(tmp_path/'out'/'imp.csv')
    assert len(df) == 3 + 2 * 2                                   # dense, 2 levels; 2 levels of each baseline
    assert (tmp_path/'out'/'imp.png').stat().st_size > 1000
    assert not (tmp_path/'ticketlab_out').exists()

def test_lmc_writes_csvs_and_png(tmp_path):
    p = ticketlab('lmc', '--training-steps', '2ep', '--rewind-steps', '0it,1ep', '--precision', 'fp32', '--no-progress',
                  '--store', str(tmp_path/'store'), '--out', str(tmp_path/'out'), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert 'onset of linear mode connectivity (test)' in p.stdout and 'onset of linear mode connectivity (train)' in p.stdout
    s = pd.read_csv(tmp_path/'out'/'lmc.csv')
    assert s.rewind_step.tolist() == [0, 0, 22, 22] and s.split.tolist() == ['test', 'train'] * 2
    c = pd.read_csv(tmp_path/'out'/'lmc_curves.csv')
    assert len(c) == 2 * 1 * 2 * 11 and {'rewind_step', 'pair', 'split', 'alpha', 'error'} <= set(c.columns)
    assert (tmp_path/'out'/'lmc.png').stat().st_size > 1000
    rows = [l.split() for l in p.stdout.splitlines() if l.split()[:1] in (['0'], ['22'])]
    assert len(rows) == 4                                         # the printed table: two steps x two splits

def test_lmc_level_uses_the_mask_of_imp_rewinding_to_each_k(tmp_path):
    "LMC Fig. 23: the children at step k start from m_k ⊙ W_k, m_k the mask IMP rewinding to k found; refused when not stored."
    from ticketlab.imp import imp, ImpHparams
    from ticketlab.masks import Mask
    from ticketlab.store import Store
    from ticketlab.train import TrainHparams
    hp = TrainHparams(training_steps='3ep', precision='fp32')
    by_k = {k: imp(hp, ImpHparams(fraction=0.5, levels=2, rewind_step=k), Store(tmp_path/'store'), progress=False) for k in ('0it', '1ep')}
    assert by_k['0it'][2]['mask'] != by_k['1ep'][2]['mask']
    common = ['--store', str(tmp_path/'store'), '--no-progress', '--training-steps', '3ep', '--precision', 'fp32', '--level', '2',
              '--splits', 'test']
    p = ticketlab('lmc', *common, '--rewind-steps', '0it,1ep', '--out', str(tmp_path/'out'), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert f"IMP level 2 ({by_k['0it'][2]['mask'].density:.3g} of the weights" in p.stdout
    child_masks = {Mask.load(f).hash for f in (tmp_path/'store'/'branch').glob('*/mask.pt')}
    assert child_masks == {by_k['0it'][2]['mask'].hash, by_k['1ep'][2]['mask'].hash}
    p = ticketlab('lmc', *common, '--rewind-steps', '0it,5it', '--out', str(tmp_path/'out2'), cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.count('\n') == 1, p.stderr
    assert 'rewinding to step 5' in p.stderr and 'stored rewind steps: [0, 22]' in p.stderr
    assert not (tmp_path/'out2').exists()

def test_lmc_density_prunes_the_dense_solution_once(tmp_path):
    p = ticketlab('lmc', '--training-steps', '2ep', '--rewind-steps', '1ep', '--density', '0.2', '--splits', 'test', '--precision', 'fp32',
                  '--no-progress', '--store', str(tmp_path/'store'), '--out', str(tmp_path/'out'), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert 'one-shot magnitude pruning to 0.2 of the weights' in p.stdout
    assert len(pd.read_csv(tmp_path/'out'/'lmc.csv')) == 1

def test_supermask_sweeps_k_beside_the_dense_network(tmp_path):
    p = ticketlab('supermask', '--training-steps', '2ep', '--densities', '0.3,0.7', '--replicates', '2', '--precision', 'fp32', '--no-progress',
                  '--store', str(tmp_path/'store'), '--out', str(tmp_path/'out'), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert 'edge_popup supermasks in a random lenet_300_100' in p.stdout and 'wrote' in p.stdout
    df = pd.read_csv(tmp_path/'out'/'supermask.csv')
    assert df.method.tolist() == ['dense'] * 2 + ['edge_popup'] * 4 and df.replicate.tolist() == [0, 1] * 3
    assert df.density.tolist() == [1.0, 1.0, 0.3, 0.3, 0.7, 0.7] and df.lr.tolist() == [0.01] * 2 + [0.1] * 4
    assert df.test_accuracy.between(0, 1).all() and (tmp_path/'out'/'supermask.png').stat().st_size > 1000
    assert len(list((tmp_path/'store'/'supermask').iterdir())) == 4 and not (tmp_path/'ticketlab_out').exists()

def test_supermask_bernoulli_takes_the_papers_rate(tmp_path):
    p = ticketlab('supermask', '--method', 'bernoulli', '--no-dense', '--training-steps', '1ep', '--precision', 'fp32', '--no-progress',
                  '--store', str(tmp_path/'store'), '--out', str(tmp_path/'out'), cwd=tmp_path)
    assert p.returncode == 0 and 'very large' not in p.stderr, p.stderr
    df = pd.read_csv(tmp_path/'out'/'supermask.csv')
    assert df.method.tolist() == ['bernoulli'] and df.lr.tolist() == [200.0] and df.density.isna().all() and 0 < df.kept[0] < 1

def test_scores_compute_reuse_refuse_export_import_list(tmp_path):
    "App. A's ensemble through the CLI: computed once (K dense runs in the store), loaded the second time, shared as CSV and .npy."
    import numpy as np
    from ticketlab.el2n import Scores
    sdir = ['--scores-dir', str(tmp_path/'scores')]
    common = ['--training-steps', '2ep', '--K', '2', '--steps', '10it', '--name', 'dig', '--precision', 'fp32', '--no-progress', *sdir]
    p = ticketlab('scores', *common, '--store', str(tmp_path/'store'), '--out', str(tmp_path/'out'), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Scores('dig': el2n, 1437 examples" in p.stdout and 'K=2 networks at t=10it' in p.stdout
    df = pd.read_csv(tmp_path/'out'/'scores.csv')
    assert list(df.columns) == ['index', 'score', 'rank', 'label'] and len(df) == 1437 and df.score.between(0, 2**0.5).all()
    assert (tmp_path/'out'/'scores.png').stat().st_size > 1000 and len(list((tmp_path/'store'/'train').iterdir())) == 2
    s = Scores.load('dig', tmp_path/'scores')
    assert (s.meta['kind'], s.meta['K'], s.meta['t']) == ('el2n', 2, 10) and np.array_equal(s.values, df.score.to_numpy())
    p = ticketlab('scores', *common, '--store', str(tmp_path/'store2'), '--out', str(tmp_path/'out2'), cwd=tmp_path)
    assert p.returncode == 0 and not (tmp_path/'store2').exists(), p.stderr          # loaded: nothing trained
    p = ticketlab('scores', *common, '--kind', 'grand', '--store', str(tmp_path/'store'), '--out', str(tmp_path/'out3'), cwd=tmp_path)
    assert p.returncode == 2 and 'kind el2n there, grand here' in p.stderr and not (tmp_path/'out3').exists()
    p = ticketlab('scores', 'export', '--name', 'dig', '--npy', str(tmp_path/'dig.npy'), '--csv', str(tmp_path/'dig.csv'), *sdir, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert np.array_equal(np.load(tmp_path/'dig.npy'), s.values) and np.array_equal(pd.read_csv(tmp_path/'dig.csv').score, s.values)
    for flag, f, name in (('--csv', 'dig.csv', 'from-csv'), ('--npy', 'dig.npy', 'from-npy')):
        p = ticketlab('scores', 'import', flag, str(tmp_path/f), '--name', name, *sdir, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert np.array_equal(Scores.load(name, tmp_path/'scores').values, s.values)
    assert Scores.load('from-npy', tmp_path/'scores').meta == s.meta                 # the .json sidecar carries the meta
    p = ticketlab('scores', 'list', *sdir, cwd=tmp_path)
    assert p.returncode == 0 and all(n in p.stdout for n in ('dig', 'from-csv', 'from-npy')), p.stdout
    assert not (tmp_path/'ticketlab_out').exists()

def test_datadiet_computes_scores_then_pretrains_on_subsets(tmp_path):
    p = ticketlab('datadiet', '--training-steps', '2ep', '--levels', '1', '--subsets', 'easiest,hardest,random', '--sizes', '128', '--steps', '10it',
                  '--references', '0it', '--score-steps', '10it', '--K', '2', '--scores', 'dig', '--scores-dir', str(tmp_path/'scores'),
                  '--precision', 'fp32', '--no-progress', '--store', str(tmp_path/'store'), '--out', str(tmp_path/'out'), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "ranked by Scores('dig': el2n" in p.stdout and 'easiest M=128 t_r=10' in p.stdout and 'all t=0' in p.stdout
    df = pd.read_csv(tmp_path/'out'/'datadiet.csv')
    assert sorted(set(df.subset)) == ['all', 'easiest', 'hardest', 'random'] and len(df) == 4 * 2
    assert set(df[df.subset != 'all'].rewind_step) == {10} and df.test_accuracy.between(0, 1).all()
    assert (tmp_path/'out'/'datadiet.png').stat().st_size > 1000 and (tmp_path/'scores'/'dig.npz').exists()
    p = ticketlab('datadiet', '--training-steps', '2ep', '--subsets', 'hardest', '--sizes', '128', '--scores', 'dig', '--scores-dir',
                  str(tmp_path/'scores'), '--dataset', 'synthetic', '--store', str(tmp_path/'store'), '--out', str(tmp_path/'out2'), cwd=tmp_path)
    assert p.returncode == 2 and 'training set has' in p.stderr and not (tmp_path/'out2').exists()

def test_datadiet_label_noise_scores_the_corrupted_labels(tmp_path):
    "--noise (App. A, Figure 4): pre-training on corrupted labels, ranked by scores computed on those labels; clean scores refused."
    from ticketlab.data import load_dataset, corrupt_labels
    from ticketlab.el2n import Scores, scores_meta
    common = ['--training-steps', '2ep', '--levels', '1', '--subsets', 'easiest', '--sizes', '128', '--steps', '10it', '--references', '0it',
              '--scores-dir', str(tmp_path/'scores'), '--precision', 'fp32', '--no-progress', '--store', str(tmp_path/'store')]
    p = ticketlab('datadiet', *common, '--noise', '0.5', '--score-steps', '10it', '--K', '1', '--scores', 'noisy', '--out', str(tmp_path/'out'), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(tmp_path/'out'/'datadiet.csv')
    assert set(df.noise) == {0.5} and sorted(set(df.subset)) == ['all', 'easiest']
    noisy = corrupt_labels(load_dataset('digits')[0], 0.5, 0)[0]
    s = Scores.load('noisy', tmp_path/'scores')
    assert s.meta['data']['labels'] == scores_meta('el2n', noisy)['data']['labels']     # the corrupted labels were scored
    p = ticketlab('datadiet', *common, '--scores', 'noisy', '--out', str(tmp_path/'out2'), cwd=tmp_path)   # no --noise: other labels
    assert p.returncode == 2 and 'other labels' in p.stderr and not (tmp_path/'out2').exists()

# --- ticketlab hessian: the spectrum of a stored run ---------------------------------------------------------------

@pytest.fixture(scope='module')
def hessian_store(tmp_path_factory):
    "A dense LeNet-300-100 (width 0.05: 1,115 parameters) on the digits and its IMP level 1 (30% of the weights kept), stored."
    from ticketlab.imp import ImpHparams, imp
    from ticketlab.store import Store
    from ticketlab.train import TrainHparams
    root = tmp_path_factory.mktemp('hessian')/'store'
    recs = imp(TrainHparams(width=0.05, training_steps='2ep', precision='fp32'), ImpHparams(fraction=0.7, levels=1), Store(root))
    return root, recs[0]['run'], recs[1]['run']

def exact_hessian(run, prunable=False):
    "The Hessian of the mean cross-entropy over the whole training set at `run`'s final weights, in float64 by `torch.func` (all parameters, or the prunable weights)."
    import torch, torch.nn.functional as F
    from torch.func import functional_call, jacrev
    from ticketlab.loader import eval_batches
    from ticketlab.models import prunable_parameters
    from ticketlab.runs import build_model, load_data
    train, _ = load_data(run.hparams)
    model = build_model(run.hparams, train).double().eval()
    model.load_state_dict(run.weights(run.checkpoint_steps()[-1]))
    x, y = (torch.cat(t) for t in zip(*eval_batches(train, 2048, 'cpu')))
    fixed = {n: t.detach() for n, t in (*model.named_parameters(), *model.named_buffers())}
    names = list(prunable_parameters(model)) if prunable else [n for n, _ in model.named_parameters()]
    shapes = [fixed[n].shape for n in names]
    def loss(w):
        p = {n: c.reshape(s) for n, c, s in zip(names, w.split([s.numel() for s in shapes]), shapes)}
        return F.cross_entropy(functional_call(model, {**fixed, **p}, (x.double(),)), y)
    return jacrev(jacrev(loss), chunk_size=64)(torch.cat([fixed[n].reshape(-1) for n in names])), names

HESSIAN_ARGS = ['--dtype', 'float64', '--examples', '0', '--topk', '3', '--trace-probes', '50', '--density-probes', '10', '--nodes', '40', '--no-progress']

def test_hessian_of_a_stored_run_is_the_exact_hessians(hessian_store, tmp_path):
    "The dense run by an id prefix, as a user runs it: the top eigenvalues and the trace of the exact Hessian, D = every parameter."
    import numpy as np, torch
    root, dense, _ = hessian_store
    p = ticketlab('hessian', dense.name[:6], *HESSIAN_ARGS, '--store', str(root), '--out', str(tmp_path/'out'), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    H, _ = exact_hessian(dense)
    lam = torch.linalg.eigvalsh(H).flip(0).numpy()
    ev = pd.read_csv(tmp_path/'out'/'eigenvalues.csv')
    assert list(ev.columns) == ['rank', 'eigenvalue', 'residual', 'error_bound', 'converged'] and ev['rank'].tolist() == [1, 2, 3]
    assert ev.converged.all() and np.allclose(ev.eigenvalue, lam[:3], rtol=1e-6, atol=0), (ev.eigenvalue.tolist(), lam[:3])
    t = pd.read_csv(tmp_path/'out'/'trace.csv')
    assert (t.run[0], t.step[0], t.subspace[0], t.split[0], t.examples[0], t.dim[0]) == (dense.ref, dense.checkpoint_steps()[-1], 'all', 'train', 1437, 1115)
    assert abs(t.trace[0] - H.trace().item()) < 4 * t.std_error[0], (t.trace[0], H.trace().item(), t.std_error[0])
    d = pd.read_csv(tmp_path/'out'/'density.csv')
    assert abs((d.density * d.eigenvalue.diff().mean()).sum() - 1) < 1e-3                  # a probability density
    assert len(pd.read_csv(tmp_path/'out'/'quadrature.csv')) == 10 * 40 and (tmp_path/'out'/'spectrum.png').stat().st_size > 1000
    assert f'{dense.ref} (lenet_300_100 on digits)' in p.stdout and 'D = 1,115, 1437 examples, float64: λ_max = ' in p.stdout
    assert 'Hessian-vector products' in p.stdout and not (tmp_path/'ticketlab_out').exists()

def test_hessian_in_the_mask_subspace_of_an_imp_level(hessian_store, tmp_path, capsys):
    "An IMP level by its folder, --subspace mask: D is the number of weights the mask keeps, the eigenvalues the exact Hessian's on them."
    import numpy as np, torch
    root, _, level = hessian_store
    code, out, err = run_main(capsys, 'hessian', str(level.path), '--subspace', 'mask', *HESSIAN_ARGS, '--out', str(tmp_path/'out'))
    assert code == 0, err
    mask = level.mask()
    H, names = exact_hessian(level, prunable=True)
    keep = torch.cat([mask[n].reshape(-1) for n in names])
    lam = torch.linalg.eigvalsh(H[keep][:, keep]).flip(0).numpy()
    t = pd.read_csv(tmp_path/'out'/'trace.csv')
    assert t.dim[0] == mask.num_kept == len(lam) == 326 and t.subspace[0] == 'mask'
    ev = pd.read_csv(tmp_path/'out'/'eigenvalues.csv')
    assert np.allclose(ev.eigenvalue, lam[:3], rtol=1e-6, atol=0), (ev.eigenvalue.tolist(), lam[:3])
    assert "in its mask's subspace (its mask keeps 0.3 of the prunable weights)" in out and 'D = 326,' in out

def test_hessian_refuses_by_name(hessian_store, tmp_path, capsys):
    "Bad runs, steps and subspaces: one line, exit 2, nothing written; --list shows the runs; KIND/ID settles a shared prefix."
    import shutil
    from ticketlab.cli import find_run
    from ticketlab.store import Store
    root, dense, level = hessian_store
    def refused(*args, store=root):
        code, _, err = run_main(capsys, 'hessian', *args, '--store', str(store), '--out', str(tmp_path/'out'))
        assert code == 2 and err.count('\n') == 1 and err.startswith('ticketlab hessian: error:'), err
        return err
    assert 'has no mask (a dense run); choose all or prunable' in refused(dense.name, '--subspace', 'mask')
    err = refused('nope')
    assert f"no run 'nope' in {root}; it holds 2 runs (1 imp_level, 1 train): ticketlab hessian --list shows them" in err, err
    typo = dense.name[:-1] + ('0' if dense.name[-1] != '0' else '1')
    assert f'close: {dense.ref}' in refused(typo)
    assert f'step 1ep (22it): {dense} has no checkpoint there; its checkpoints are at {dense.checkpoint_steps()}' in refused(dense.name, '--step', '1ep')
    assert 'bad Step' in refused(dense.name, '--step', '22')
    assert 'topk: 400 eigenvalues exceed the dimension 326 of the mask subspace' in refused(level.name, '--subspace', 'mask', '--topk', '400')
    assert 'is a folder but not a stored run' in refused(str(root))
    assert not (tmp_path/'out').exists()
    code, out, _ = run_main(capsys, 'hessian', '--list', '--store', str(root))
    rows = {l.split()[1]: l.split() for l in out.splitlines()[1:]}
    assert code == 0 and rows[dense.name][:4] == ['train', dense.name, 'True', '-'] and rows[level.name][:4] == ['imp_level', level.name, 'True', '0.3']
    other = tmp_path/'other'
    for kind, name in (('train', 'abcd' + '0' * 12), ('imp_level', 'abcd' + '1' * 12)): shutil.copytree(dense.path, other/kind/name)
    assert "RUN 'abcd' matches 2 runs" in refused('abcd', store=other) and 'give more of the id, or KIND/ID' in refused('abcd', store=other)
    assert find_run(Store(other), 'imp_level/abcd').path == other/'imp_level'/('abcd' + '1' * 12)
    assert find_run(Store(other), 'abcd1').path == other/'imp_level'/('abcd' + '1' * 12)
    home = tmp_path/'home'                                    # a TICKETLAB_HOME given as --store: point to its runs folder
    shutil.copytree(other, home/'runs')
    assert f'holds no runs; did you mean --store {home/"runs"}?' in refused('abcd', store=home)
    code, out, _ = run_main(capsys, 'hessian', '--list', '--store', str(home))
    assert code == 0 and f'no runs in {home}; did you mean --store {home/"runs"}?' in out
