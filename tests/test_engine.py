"""The engine: N networks stepped together equal the same runs one at a time (per step, within a stated tolerance), masks,
different lengths, exact resume, and the measured fused-or-not choice."""
import copy, json
import pytest, torch
import ticketlab.engine as engine_mod
from ticketlab.core import seed_all
from ticketlab.data import load_dataset
from ticketlab.masks import prune_to_density, random_prune
from ticketlab.models import get_model
from ticketlab.loader import Loader
from ticketlab.train import TrainHparams, Trainer, Callback, CancelFitException, BatchFn
from ticketlab.engine import GroupTrainer, fused_sgd_, pick_engine, engine_probe, resolve_engine, FUSED_MIN_SPEEDUP

# The group and the solo runs are compared in float64 (weights and batches; the code paths are the ones fp32 takes).
# vmap sums the same products in another order (a batched matmul plus a bias add for addmm, a grouped convolution for a
# convolution). In float32 that rounding was a few ulps, except where a ReLU's input lies within rounding of zero: on a
# 2-core AMD EPYC with AVX2 (no AVX512), one pre-activation of the tiny ResNet's member 2 was -7e-8 alone and +1.3e-7 in
# the group, so that ReLU passed its gradient in one and not the other and a BatchNorm bias's gradient moved by 4%. Such
# a flip is a property of rounding, not of the engine, and in float64 rounding is ~1e-16, so no input comes that close.
# Per step, from the solo run's exact state, one group step lands within this normwise relative difference of the solo
# run's next state; the worst seen in float64 is 6e-15 (the tiny ResNet), so 1e-12 leaves a 150x margin, and a real
# difference (a wrong batch, learning rate, mask or BatchNorm statistic) moves weights by 1e-3 or more.
PER_STEP = 1e-12

ARCHS = {'lenet': ('digits', 'lenet_300_100', 0.25, False), 'conv4': ('synthetic', 'conv4', 0.25, True),
         'resnet': ('synthetic', 'resnet20', 0.25, True)}

def setup(arch, lengths=(3, 3, 3)):
    dataset, model, width, augment = ARCHS[arch]
    train, _ = load_dataset(dataset)
    def net(seed): seed_all(seed); return get_model(model, train.num_classes, train.shape, width=width).double()
    hps = [TrainHparams(dataset=dataset, model=model, width=width, training_steps=f'{k}it', init_seed=i, data_seed=10 + i,
                        batch_size=32, augment=augment, nesterov=arch == 'resnet', precision='fp32') for i, k in enumerate(lengths)]
    masks = [prune_to_density(net(5), 0.3), None, random_prune(prune_to_density(net(6), 0.5), 3)]
    return train, net, hps, masks

def f64(train, hp) -> BatchFn:
    "`hp`'s batches (the Loader's, augmentation included) in float64."
    loader = Loader(train, hp.batch_size, hp.data_seed, augment=hp.augment, device='cpu')
    return BatchFn(lambda step: (lambda x, y: (x.double(), y))(*loader.batch(step)), loader.iterations_per_epoch)

def rel(a, b) -> float:
    "Normwise relative difference of two tensors (exact equality for integer ones)."
    if not a.is_floating_point(): return 0.0 if torch.equal(a, b) else float('inf')
    return ((a - b).abs().max() / a.abs().max().clamp_min(1e-30)).item()

def momentum(st): return {j: s['momentum_buffer'] for j, s in st['optimizer']['state'].items()}

def worst(solo:dict, fused:dict) -> float:
    "Largest normwise relative difference over weights, BatchNorm buffers and momentum of two `Trainer.state()`s."
    assert solo['step'] == fused['step'] and solo['model'].keys() == fused['model'].keys()
    ms, mf = momentum(solo), momentum(fused)
    assert ms.keys() == mf.keys()
    return max([rel(solo['model'][k], fused['model'][k]) for k in solo['model']] + [rel(ms[j], mf[j]) for j in ms])

class Keep(Callback):
    "Every state of a run, from the start."
    def before_fit(self, t): self.states = [copy.deepcopy(t.state())]
    def after_step(self, t): self.states.append(copy.deepcopy(t.state()))

def test_fused_sgd_is_torch_sgd_bit_for_bit():
    torch.manual_seed(0)
    w, g, lrs = torch.randn(3, 4, 5), torch.randn(3, 4, 5), [0.1, 0.03, 0.1]
    for nesterov in (False, True):
        W, buf = w.clone(), torch.zeros_like(w)
        for _ in range(3): fused_sgd_([W], [g], [buf], lrs, momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
        for i, lr in enumerate(lrs):
            p = w[i].clone().requires_grad_()
            opt = torch.optim.SGD([p], lr=lr, momentum=0.9, weight_decay=1e-3, nesterov=nesterov)
            for _ in range(3): p.grad = g[i].clone(); opt.step()
            assert torch.equal(W[i], p.detach()) and torch.equal(buf[i], opt.state[p]['momentum_buffer'])

@pytest.mark.parametrize('arch', list(ARCHS))
def test_each_group_step_is_the_solo_step(arch):
    train, net, hps, masks = setup(arch)
    keeps = [Keep() for _ in hps]
    for h, m, k in zip(hps, masks, keeps): Trainer(net(h.init_seed), h, mask=m, batches=f64(train, h), device='cpu', callbacks=[k]).fit()
    g = GroupTrainer([net(h.init_seed) for h in hps], hps, masks=masks, batches=[f64(train, h) for h in hps], device='cpu')
    for t in range(3):
        for mb, k in zip(g, keeps): mb.load_state(k.states[t])
        g.fit(t, t + 1)
        for mb, k, m in zip(g, keeps, masks):
            st = mb.state()
            assert worst(k.states[t + 1], st) < PER_STEP, (arch, t)
            if m is not None:    # pruned weights and their momentum exactly zero
                for name in m:
                    assert (st['model'][name][~m[name]] == 0).all()
                    assert (momentum(st)[g.names.index(name)][~m[name]] == 0).all()

def test_members_of_different_lengths_leave_the_group_with_their_solo_state():
    train, net, hps, masks = setup('lenet', lengths=(4, 2, 6))
    solo = [Trainer(net(h.init_seed), h, mask=m, batches=f64(train, h), device='cpu').fit().state() for h, m in zip(hps, masks)]
    seen = []
    class Active(Callback):
        def after_step(self, t): seen.append((t.step, len(t.group._stacked)))
    g = GroupTrainer([net(h.init_seed) for h in hps], hps, masks=masks, batches=[f64(train, h) for h in hps], device='cpu', callbacks=[[], [], [Active()]]).fit()
    assert [mb.step for mb in g] == [4, 2, 6]
    assert seen == [(1, 3), (2, 3), (3, 2), (4, 2), (5, 1), (6, 1)]          # the group shrinks as members finish
    for s, mb in zip(solo, g): assert worst(s, mb.state()) < 6 * PER_STEP    # a few steps of LeNet: no amplification yet

def test_group_resume_is_bit_identical_and_interchangeable_with_trainer():
    train, net, hps, masks = setup('resnet', lengths=(4, 3, 4))
    full = GroupTrainer([net(h.init_seed) for h in hps], hps, masks=masks, batches=[f64(train, h) for h in hps], device='cpu').fit()
    part = GroupTrainer([net(h.init_seed) for h in hps], hps, masks=masks, batches=[f64(train, h) for h in hps], device='cpu').fit(0, 2)
    mid = [copy.deepcopy(mb.state()) for mb in part]
    again = GroupTrainer([net(99) for _ in hps], hps, masks=masks, batches=[f64(train, h) for h in hps], device='cpu')
    for mb, st in zip(again, mid): mb.load_state(st)
    again.fit([2, 2, 2])
    for a, b in zip(full, again):
        sa, sb = a.state(), b.state()
        assert all(torch.equal(sa['model'][k], sb['model'][k]) for k in sa['model'])
        assert all(torch.equal(x, momentum(sb)[j]) for j, x in momentum(sa).items())
    tr = Trainer(net(7), hps[0], mask=masks[0], batches=f64(train, hps[0]), device='cpu')    # a member's state is a Trainer's state
    tr.load_state(mid[0]); tr.fit(tr.step)
    assert tr.step == 4 and worst(tr.state(), full[0].state()) < 2 * PER_STEP

def test_cancel_ends_one_member_only():
    train, net, hps, _ = setup('lenet', lengths=(5, 5))
    class Stop(Callback):
        def after_step(self, t):
            if t.step == 2: raise CancelFitException()
    g = GroupTrainer([net(h.init_seed) for h in hps], hps, batches=[f64(train, h) for h in hps], device='cpu', callbacks=[[Stop()], []]).fit()
    assert [mb.step for mb in g] == [2, 5]

def test_bad_groups_are_named():
    train, net, hps, _ = setup('lenet', lengths=(2, 2))
    with pytest.raises(ValueError, match='differ in weight_decay'):
        GroupTrainer([net(0), net(1)], [hps[0], hps[1].replace(weight_decay=0.0)], train, device='cpu')
    with pytest.raises(ValueError, match='one architecture'):
        GroupTrainer([net(0), get_model('lenet_300_100', 10, train.shape, width=0.5)], hps, train, device='cpu')
    with pytest.raises(ValueError, match='SGD only'):
        GroupTrainer([net(0)], [hps[0].replace(optimizer='adam')], train, device='cpu')
    with pytest.raises(ValueError, match='fp32 only'):     # under bf16 autocast vmap's convolutions would run in fp32
        GroupTrainer([net(0)], [hps[0].replace(precision='bf16')], train, device='cpu')

def test_pick_engine_never_picks_the_slower_path():
    assert pick_engine(fused_s=1.0, solo_s=2.0) == 'fused'
    assert pick_engine(fused_s=2.0, solo_s=1.0) == 'off'
    assert pick_engine(fused_s=1.0, solo_s=FUSED_MIN_SPEEDUP * 0.99) == 'off'     # faster, but within the noise margin
    assert pick_engine(fused_s=1.0, solo_s=FUSED_MIN_SPEEDUP) == 'fused'

def test_engine_probe_measures_once_and_caches(monkeypatch, tmp_path):
    monkeypatch.setenv('TICKETLAB_HOME', str(tmp_path))
    monkeypatch.setattr(engine_mod, '_ENGINE_PROBES', {})
    calls = []
    def fake(hp, n, shape, num_classes, device=None, **kw):
        calls.append(n); return dict(fused=0.5 if hp.model == 'resnet20' else 2.0, solo=1.0, threads=1)
    monkeypatch.setattr(engine_mod, 'time_engines', fake)
    hp = TrainHparams(precision='fp32')
    r = engine_probe(hp, 3, (1, 8, 8), 10, 'cpu')
    assert r['choice'] == 'off' and r['n'] == 4 and calls == [4]
    assert json.loads(open(r['path']).read())['choice'] == 'off'
    monkeypatch.setattr(engine_mod, '_ENGINE_PROBES', {})                 # a new process reads the file
    assert engine_probe(hp, 4, (1, 8, 8), 10, 'cpu')['choice'] == 'off' and calls == [4]
    assert resolve_engine('auto', hp.replace(model='resnet20'), 5, (3, 8, 8), 10, 'cpu') == 'fused' and calls == [4, 8]
    assert resolve_engine('auto', hp, 1, (1, 8, 8), 10, 'cpu') == 'off'      # nothing to fuse
    assert resolve_engine('fused', hp, 3, (1, 8, 8), 10, 'cpu') == 'fused'   # forced: no measurement
    assert resolve_engine('auto', hp.replace(precision='bf16'), 3, (1, 8, 8), 10, 'cpu') == 'off' and calls == [4, 8]   # fp32 only
    monkeypatch.setenv('TICKETLAB_ENGINE', 'fused')
    assert resolve_engine('auto', hp, 3, (1, 8, 8), 10, 'cpu') == 'fused' and calls == [4, 8]
    monkeypatch.setenv('TICKETLAB_ENGINE', 'fast')
    with pytest.raises(ValueError, match='TICKETLAB_ENGINE'): resolve_engine('auto', hp, 3, (1, 8, 8), 10, 'cpu')
    with pytest.raises(ValueError, match='auto, fused, off'): resolve_engine('on', hp, 3, (1, 8, 8), 10, 'cpu')

# ---- through train_runs: each member written to the store as the one-at-a-time path writes it; SIGKILL mid-group
import os, signal, subprocess, sys, textwrap
from ticketlab.store import Store, load_checkpoint
from ticketlab.runs import RunSpec, train_runs

RUN_HP = TrainHparams(dataset='digits', model='lenet_300_100', width=0.25, batch_size=64, precision='fp32')
LENGTHS = ('25it', '12it', '20it')
def run_specs(extra_cbs=()):
    return [RunSpec(RUN_HP.replace(training_steps=T, init_seed=i, data_seed=i), checkpoints=['5it'], save_every='5it',
                    eval_every='10it', callbacks=list(extra_cbs) if i == 0 else []) for i, T in enumerate(LENGTHS)]

KILLER = textwrap.dedent('''
    import os, signal, sys, torch
    torch.set_num_threads(1)
    sys.path.insert(0, sys.argv[3])
    from test_engine import run_specs
    from ticketlab.store import Store
    from ticketlab.runs import train_runs
    from ticketlab.train import Callback
    class Kill(Callback):
        order = 99   # member 0's resume checkpoint of this step is written; members 1 and 2 have not reached this step's yet
        def after_step(self, t):
            if t.step == int(sys.argv[2]): os.kill(os.getpid(), signal.SIGKILL)
    train_runs(run_specs([Kill()]), Store(sys.argv[1]), progress=False, engine='fused')
''')

def _final(run): return run.weights(run.checkpoint_steps()[-1])

def test_fused_train_runs_write_what_solo_writes(tmp_path):
    torch.set_num_threads(1)
    fused = train_runs(run_specs(), Store(tmp_path/'fused'), progress=False, engine='fused')
    solo = train_runs(run_specs(), Store(tmp_path/'solo'), progress=False, engine='off')
    for f, s in zip(fused, solo):
        assert f.name == s.name and f.checkpoint_steps() == s.checkpoint_steps() and not (f.path/'resume.pt').exists()
        assert f.summary()['engine'] == 'fused' and f.summary()['group'] == 3 and f.record()['engine'] == 'fused'
        assert set(f.summary()) - set(s.summary()) == {'engine', 'group'} and f.summary()['step'] == s.summary()['step']
        mf, ms = f.metrics(), s.metrics()
        assert mf[['step', 'split']].equals(ms[['step', 'split']])
        assert (mf.accuracy - ms.accuracy).abs().max() < 0.02      # test accuracy of near-identical weights
        a, b = _final(f), _final(s)
        assert all(rel(b[k], a[k]) < 1e-4 for k in a)

def test_group_killed_mid_step_resumes_to_identical_runs(tmp_path):
    torch.set_num_threads(1)
    full = train_runs(run_specs(), Store(tmp_path/'full'), progress=False, engine='fused')
    p = subprocess.run([sys.executable, '-c', KILLER, str(tmp_path/'killed'), '15', os.path.dirname(__file__)],
                       capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr
    st = Store(tmp_path/'killed')
    runs = [st.run('train', s.hparams) for s in run_specs()]
    assert [r.done for r in runs] == [False, True, False]                        # the 12-step member finished before the kill
    assert [load_checkpoint(r.path/'resume.pt')['step'] for r in (runs[0], runs[2])] == [15, 10]
    resumed = train_runs(run_specs(), st, progress=False, engine='fused')        # members 0 and 2 from different steps
    for a, b in zip(full, resumed):
        assert b.done and a.checkpoint_steps() == b.checkpoint_steps()
        wa, wb = _final(a), _final(b)
        assert all(torch.equal(wa[k], wb[k]) for k in wa), b
        assert a.summary()['test_accuracy'] == b.summary()['test_accuracy']

def test_bf16_specs_train_one_at_a_time(tmp_path):
    specs = [RunSpec(RUN_HP.replace(training_steps='3it', init_seed=i, precision='bf16')) for i in range(2)]
    with pytest.warns(UserWarning, match='fp32 only'): runs = train_runs(specs, Store(tmp_path), progress=False, engine='fused')
    assert all(r.done and 'engine' not in r.summary() for r in runs)
