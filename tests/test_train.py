"""The trainer: schedules continued and rewound, SGD/Nesterov and Adam against hand-written updates, bf16, the progress bar,
the open trainer (loss, parameters, batch source, events), determinism switches and warnings on surely-wrong hparams."""
import copy, math, os, warnings
import pytest, torch, torch.nn.functional as F
from torch import nn
import ticketlab.train as train_mod
from ticketlab.data import load_dataset
from ticketlab.masks import Mask, prune_to_density
from ticketlab.models import get_model
from ticketlab.train import (TrainHparams, Trainer, Callback, BatchFn, ProgressCB, HparamWarning, lr_schedule,
                             determinism_settings, deterministic_algorithms)
from ticketlab.evaluate import evaluate

@pytest.fixture(scope='module')
def digits(): return load_dataset('digits')

def lenet(train, seed=0):
    torch.manual_seed(seed)
    return get_model('lenet_300_100', train.num_classes, train.shape)

def toy_batches(n_in=4, n_out=3, bs=8, ipe=5, seed=0):
    "A fixed synthetic classification batch for every step (a pure function of the step)."
    g = torch.Generator().manual_seed(seed)
    X, Y = torch.randn(ipe * bs, n_in, generator=g), torch.randint(0, n_out, (ipe * bs,), generator=g)
    return BatchFn(lambda t: (X[t % ipe * bs:(t % ipe + 1) * bs], Y[t % ipe * bs:(t % ipe + 1) * bs]), ipe)

def toy_model(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(4, 3)

class LRLog(Callback):
    "The learning rate the optimiser steps with, at every step."
    def before_fit(self, t): self.lrs = []
    def before_opt_step(self, t): self.lrs.append(t.opt.param_groups[0]['lr'])

# -- schedules: continued from tau (A_tau) and rewound -----------------------------------------------------------

HPS = TrainHparams(lr=0.1, schedule='cosine', warmup='3it', training_steps='4ep', precision='fp32')

def test_schedule_continued_from_tau_is_the_same_run():
    src, tau = toy_batches(), 7
    full_log, part_log, rest_log = LRLog(), LRLog(), LRLog()
    full = Trainer(toy_model(), HPS, batches=src, callbacks=[full_log], device='cpu').fit()
    T = full.end_step
    assert T == 20 and len(full_log.lrs) == T
    f = lr_schedule(HPS, src.iterations_per_epoch)
    assert full_log.lrs == [f(t) for t in range(T)]
    first = Trainer(toy_model(), HPS, batches=src, callbacks=[part_log], device='cpu').fit(0, tau)
    rest = Trainer(toy_model(), HPS, batches=src, callbacks=[rest_log], device='cpu')
    rest.load_state(first.state())
    rest.fit(rest.step, T)                                       # A_tau(w_tau, T - tau): the schedule continues
    assert part_log.lrs + rest_log.lrs == full_log.lrs
    assert rest_log.lrs[0] == f(tau) != f(0)
    for a, b in zip(full.model.parameters(), rest.model.parameters()): assert torch.equal(a, b)

def test_lr_rewinding_restarts_the_schedule():
    src, tau = toy_batches(), 7
    full_log, lrr_log, shifted_log = LRLog(), LRLog(), LRLog()
    full = Trainer(toy_model(), HPS, batches=src, callbacks=[full_log], device='cpu').fit()
    T, f = full.end_step, lr_schedule(HPS, src.iterations_per_epoch)
    # LR rewinding to 0: keep the trained weights, run the schedule again from its start
    lrr = Trainer(toy_model(), HPS, batches=src, callbacks=[lrr_log], device='cpu')
    lrr.load_state(dict(full.state(), step=0), optimizer=False)
    lrr.fit(0, T)
    assert lrr_log.lrs == full_log.lrs and lrr_log.lrs[0] == f(0)
    # from global step tau, the schedule restarted at 0 is the lambda t -> f(t - tau)
    sh = Trainer(toy_model(), HPS, batches=src, callbacks=[shifted_log], device='cpu', lr_fn=lambda t: f(t - tau)).fit(tau, T)
    assert shifted_log.lrs == [f(t) for t in range(T - tau)] != full_log.lrs[tau:]

# -- optimisers against hand-written updates ---------------------------------------------------------------------

def _grads(w:dict, x, y, mask=None):
    ws = {k: v.clone().requires_grad_() for k, v in w.items()}
    gw, gb = torch.autograd.grad(F.cross_entropy(x @ ws['weight'].T + ws['bias'], y), [ws['weight'], ws['bias']])
    g = dict(weight=gw, bias=gb)
    if mask is not None: g = {k: v * mask[k] if k in mask else v for k, v in g.items()}
    return g

def sgd_by_hand(w, src, lrs, hp, mask=None):
    "SGD with L2 weight decay, heavy-ball or Nesterov momentum (PyTorch's convention: buf_1 = g_1, no dampening)."
    w, buf = {k: v.clone() for k, v in w.items()}, {}
    for t, lr in enumerate(lrs):
        g = _grads(w, *src.batch(t), mask)
        for k in w:
            d = g[k] + hp.weight_decay * w[k]
            buf[k] = d.clone() if t == 0 else hp.momentum * buf[k] + d
            w[k] = w[k] - lr * (d + hp.momentum * buf[k] if hp.nesterov else buf[k])
            if mask is not None and k in mask: w[k] = w[k] * mask[k]
    return w

def adam_by_hand(w, src, lrs, hp, eps=1e-8, beta2=0.999):
    "Adam (Kingma & Ba, Algorithm 1) with L2 weight decay added to the gradient."
    w = {k: v.clone() for k, v in w.items()}
    m, v = {k: torch.zeros_like(x) for k, x in w.items()}, {k: torch.zeros_like(x) for k, x in w.items()}
    b1 = hp.momentum
    for t, lr in enumerate(lrs):
        g = _grads(w, *src.batch(t))
        for k in w:
            d = g[k] + hp.weight_decay * w[k]
            m[k] = b1 * m[k] + (1 - b1) * d
            v[k] = beta2 * v[k] + (1 - beta2) * d * d
            mhat, vhat = m[k] / (1 - b1 ** (t + 1)), v[k] / (1 - beta2 ** (t + 1))
            w[k] = w[k] - lr * mhat / (vhat.sqrt() + eps)
    return w

@pytest.mark.parametrize('masked', [False, True])
def test_nesterov_sgd_matches_hand_update(masked):
    hp = TrainHparams(optimizer='sgd', nesterov=True, momentum=0.9, weight_decay=1e-2, lr=0.3, warmup='2it',
                      training_steps='8it', precision='fp32')
    src, model = toy_batches(), toy_model()
    mask = Mask({'weight': torch.rand(3, 4, generator=torch.Generator().manual_seed(1)) < 0.5}) if masked else None
    w0 = {k: v.detach().clone() * (mask[k] if mask and k in mask else 1) for k, v in model.state_dict().items()}
    tr = Trainer(model, hp, batches=src, mask=mask, device='cpu').fit()
    f = lr_schedule(hp, src.iterations_per_epoch)
    expect = sgd_by_hand(w0, src, [f(t) for t in range(8)], hp, mask)
    plain = sgd_by_hand(w0, src, [f(t) for t in range(8)], hp.replace(nesterov=False), mask)
    for k, v in tr.model.state_dict().items():
        torch.testing.assert_close(v, expect[k], rtol=0, atol=1e-6)
        assert (v - plain[k]).abs().max() > 1e-4           # Nesterov is not heavy-ball: the check can tell them apart
    if masked: assert (tr.model.weight[~mask['weight']] == 0).all()

def test_adam_matches_hand_update():
    hp = TrainHparams(optimizer='adam', momentum=0.9, weight_decay=1e-2, lr=0.01, schedule='constant', warmup='3it',
                      training_steps='8it', precision='fp32')
    src, model = toy_batches(), toy_model()
    w0 = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tr = Trainer(model, hp, batches=src, device='cpu').fit()
    f = lr_schedule(hp, src.iterations_per_epoch)
    expect = adam_by_hand(w0, src, [f(t) for t in range(8)], hp)
    for k, v in tr.model.state_dict().items():
        torch.testing.assert_close(v, expect[k], rtol=0, atol=1e-6)
        assert (v - w0[k]).abs().max() > 1e-3

# -- bf16 --------------------------------------------------------------------------------------------------------

def test_bf16_trains_with_fp32_master_weights(digits):
    train, test = digits
    hp = TrainHparams(precision='bf16', training_steps='3ep')
    class Losses(Callback):
        def before_fit(self, t): self.losses, self.dtypes = [], set()
        def after_loss(self, t): self.losses.append(t.loss.item()); self.dtypes.add(t.preds.dtype)
    log = Losses()
    tr = Trainer(lenet(train), hp, train, callbacks=[log], device='cpu').fit()
    assert tr.precision == 'bf16' and log.dtypes == {torch.bfloat16}           # the forward pass ran in bf16
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in tr.model.parameters())   # master weights
    first, last = sum(log.losses[:5]) / 5, sum(log.losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    assert evaluate(tr.model, test, precision='bf16')['accuracy'] > 0.85
    again = Trainer(lenet(train), hp, train, device='cpu').fit()                # same machine, same threads: identical
    for a, b in zip(tr.model.parameters(), again.model.parameters()): assert torch.equal(a, b)

# -- progress bar --------------------------------------------------------------------------------------------------

def test_progress_bar_counts_global_steps(capsys):
    cb = ProgressCB('toy', every=10)
    Trainer(toy_model(), HPS, batches=toy_batches(), callbacks=[cb], device='cpu').fit(5, 25)
    assert (cb.bar.total, cb.bar.n, cb.bar.initial) == (25, 25, 5)      # the bar counts global steps, resumed at 5
    err = capsys.readouterr().err
    assert 'toy' in err and '25/25' in err and 'loss=' in err and 'lr=' in err

# -- the open trainer ----------------------------------------------------------------------------------------------

class GradNormCB(Callback):
    def before_fit(self, t): self.norms = []
    def after_backward(self, t):
        self.norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in t.params])).item())

def test_grad_norm_callback_sees_the_subnetwork_gradient():
    src, model = toy_batches(), toy_model()
    mask = Mask({'weight': torch.rand(3, 4, generator=torch.Generator().manual_seed(2)) < 0.5})
    w0 = {k: v.detach().clone() * (mask[k] if k in mask else 1) for k, v in model.state_dict().items()}
    cb = GradNormCB()
    Trainer(model, TrainHparams(training_steps='6it', precision='fp32'), batches=src, mask=mask, callbacks=[cb], device='cpu').fit()
    assert len(cb.norms) == 6
    g = _grads(w0, *src.batch(0), mask)
    assert math.isclose(cb.norms[0], torch.linalg.vector_norm(torch.stack([g['weight'].norm(), g['bias'].norm()])).item(), rel_tol=1e-6)
    dense = _grads(w0, *src.batch(0))
    assert not math.isclose(cb.norms[0], torch.linalg.vector_norm(torch.stack([dense['weight'].norm(), dense['bias'].norm()])).item(), rel_tol=1e-3)

class Scaled(nn.Module):
    "Frozen random weights times a trained per-output scale (a supermask-like setting)."
    def __init__(self):
        super().__init__()
        self.weight, self.scale = nn.Parameter(torch.randn(3, 4)), nn.Parameter(torch.ones(3))
    def forward(self, x): return (x @ self.weight.T) * self.scale

def test_frozen_weights_stay_bit_identical_while_others_train():
    torch.manual_seed(0)
    model = Scaled()
    w0, s0 = model.weight.detach().clone(), model.scale.detach().clone()
    cb = GradNormCB()
    hp = TrainHparams(optimizer='adam', lr=0.05, weight_decay=1e-2, training_steps='4ep', precision='fp32')
    tr = Trainer(model, hp, batches=toy_batches(), params=lambda m: [m.scale], callbacks=[cb], device='cpu').fit()
    assert torch.equal(model.weight.detach(), w0) and not torch.equal(model.scale.detach(), s0)
    assert tr.frozen == [model.weight] and model.weight not in tr.opt.state
    # frozen tensors get each step's fresh gradient (callbacks may read it), never an accumulation over steps
    ref = copy.deepcopy(model)
    x, y = tr.loader.batch(tr.step)
    F.cross_entropy(ref(x), y).backward()
    tr.fit(tr.step, tr.step + 1)
    assert torch.equal(model.weight.grad, ref.weight.grad)

def test_custom_loss_and_batch_source_train_a_regression():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(64, 3, generator=g)
    Y = X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    src = BatchFn(lambda t: (X[t % 4 * 16:(t % 4 + 1) * 16], Y[t % 4 * 16:(t % 4 + 1) * 16]), iterations_per_epoch=4)
    torch.manual_seed(0)
    class Losses(Callback):
        def before_fit(self, t): self.losses = []
        def after_loss(self, t): self.losses.append(t.loss.item())
    log = Losses()
    hp = TrainHparams(lr=0.1, weight_decay=0.0, schedule='constant', training_steps='50ep', precision='fp32')
    tr = Trainer(nn.Linear(3, 1), hp, batches=src, loss_fn=F.mse_loss, callbacks=[log], device='cpu').fit()
    assert tr.end_step == 200 and log.losses[-1] < 1e-4 < log.losses[0]
    torch.testing.assert_close(tr.model.bias.detach(), torch.tensor([0.3]), atol=1e-3, rtol=0)

def test_events_in_order_and_gradient_changes_cannot_revive_pruned_weights(digits):
    train, _ = digits
    class Log(Callback):
        def __init__(self): self.seen = []
        def __call__(self, event, t): self.seen.append(event)
    class Noise(Callback):
        def before_opt_step(self, t):
            for p in t.params: p.grad.add_(torch.randn_like(p.grad))
    log, net = Log(), lenet(train)
    m = prune_to_density(net, 0.5)
    tr = Trainer(net, TrainHparams(training_steps='4it'), train, mask=m, callbacks=[log, Noise()], device='cpu').fit()
    assert log.seen == ['before_fit'] + ['before_step', 'after_loss', 'after_backward', 'before_opt_step', 'after_step'] * 4 + ['after_fit']
    for n, p in net.named_parameters():
        if n in m:
            assert (p[~m[n]] == 0).all() and (tr.opt.state[p]['momentum_buffer'][~m[n]] == 0).all()

def test_bad_params_and_batches_are_named():
    model = toy_model()
    with pytest.raises(ValueError, match='selects no parameters'): Trainer(model, TrainHparams(), batches=toy_batches(), params=[])
    with pytest.raises(TypeError, match='BatchFn'): Trainer(model, TrainHparams(), batches=lambda t: None)
    with pytest.raises(ValueError, match='training set'): Trainer(model, TrainHparams())

# -- determinism ---------------------------------------------------------------------------------------------------

CUDA_SWITCHES = determinism_settings('cuda')
def _switches(): return torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark

def test_determinism_settings():
    assert determinism_settings('cpu') == {} and determinism_settings('cuda', False) == {}
    assert CUDA_SWITCHES == dict(use_deterministic_algorithms=True, warn_only=True, cudnn_deterministic=True,
                                 cudnn_benchmark=False, CUBLAS_WORKSPACE_CONFIG=':4096:8')
    assert TrainHparams(deterministic=False).hash == TrainHparams().hash          # how, not what: not hashed

@pytest.mark.parametrize('deterministic', [True, False])
def test_trainer_turns_determinism_on_during_fit(monkeypatch, deterministic):
    "On CPU, pretend the device needs CUDA's switches: fit must turn them on, and restore the previous ones after."
    monkeypatch.setattr(train_mod, 'determinism_settings', lambda device, det=True: dict(CUDA_SWITCHES) if det else {})
    monkeypatch.delenv('CUBLAS_WORKSPACE_CONFIG', raising=False)
    monkeypatch.setattr(torch.backends.cudnn, 'benchmark', True)
    before = _switches()
    class Seen(Callback):
        def before_opt_step(self, t): self.during = _switches()
    seen = Seen()
    Trainer(toy_model(), TrainHparams(training_steps='2it', deterministic=deterministic), batches=toy_batches(),
            callbacks=[seen], device='cpu').fit()
    assert seen.during == ((True, True, False) if deterministic else before)
    assert _switches() == before
    assert os.environ.get('CUBLAS_WORKSPACE_CONFIG') == (':4096:8' if deterministic else None)

def test_deterministic_algorithms_restores_on_error():
    before = _switches()
    with pytest.raises(KeyError):
        with deterministic_algorithms('cuda'):
            assert _switches() == (True, True, False)
            raise KeyError('boom')
    assert _switches() == before

# -- valid but surely wrong hparams warn ------------------------------------------------------------------------------

def _warnings(f):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        f()
    return [str(x.message) for x in w if issubclass(x.category, HparamWarning)]

@pytest.mark.parametrize('kw,msg', [
    (dict(warmup='40it', training_steps='40it'), 'warmup=40it is not shorter'),
    (dict(warmup='2ep', training_steps='1ep'), 'warmup=2ep is not shorter'),
    (dict(schedule='multistep', milestones='1ep,3ep', training_steps='3ep'), 'milestone 3ep is at or past the end'),
    (dict(milestones='10ep'), 'ignored by the cosine schedule'),
    (dict(optimizer='adam', lr=1e-3, nesterov=True), 'ignored by Adam'),
    (dict(momentum=0.0, nesterov=True), 'ignored by SGD without momentum'),
    (dict(lr=3.0), 'very large for sgd'),
    (dict(optimizer='adam', lr=0.5), 'very large for adam'),
])
def test_surely_wrong_hparams_warn(kw, msg):
    ws = _warnings(lambda: TrainHparams(**kw))
    assert len(ws) == 1 and msg in ws[0], ws

def test_sensible_hparams_do_not_warn(digits):
    train, _ = digits
    assert _warnings(lambda: TrainHparams()) == []
    assert _warnings(lambda: TrainHparams(dataset='cifar10', model='resnet20', lr=0.1, schedule='multistep', batch_size=128,
                                          milestones='80ep,120ep', training_steps='160ep', warmup='2000it')) == []
    assert _warnings(lambda: TrainHparams(lr=3.0, batch_size=1024)) == []
    assert _warnings(lambda: Trainer(lenet(train), TrainHparams(warmup='10it', training_steps='1ep'), train, device='cpu')) == []

def test_warnings_that_need_the_epoch_length_come_from_the_trainer(digits):
    train, _ = digits                                                             # 22 iterations per epoch at batch 64
    for kw in (dict(warmup='30it', training_steps='1ep'), dict(schedule='multistep', milestones='25it', training_steps='1ep')):
        hp = TrainHparams(**kw)
        assert _warnings(lambda: TrainHparams(**kw)) == []                        # depends on the epoch length
        ws = _warnings(lambda: Trainer(lenet(train), hp, train, device='cpu'))
        assert len(ws) == 1 and ('warmup=30it' in ws[0] or 'milestone 25it' in ws[0]), ws
        assert _warnings(lambda: Trainer(lenet(train), hp, train, device='cpu', lr_fn=lambda t: 0.01)) == []   # schedule overridden

# -- speed switches: compile modes and fused optimiser kernels ----------------------------------------------------

COMPILED = r'''
import json, sys, torch
from ticketlab.data import load_dataset
from ticketlab.models import get_model
from ticketlab.train import TrainHparams, Trainer
train = load_dataset('digits')[0]
def fit(**kw):
    hp = TrainHparams(precision='fp32', training_steps='10it', **kw)
    torch.manual_seed(0)
    return Trainer(get_model(hp.model, train.num_classes, train.shape), hp, train, device='cpu').fit()
eager, comp = fit(), fit(compile=True, compile_mode=sys.argv[1])
print(json.dumps(dict(compiled=comp.forward is not comp.model, graphs=comp._graphs, step=comp.step,
                      gap=max((a - b).abs().max().item() for a, b in zip(eager.model.parameters(), comp.model.parameters())))))
'''

def test_compiled_training_matches_eager_on_cpu(tmp_path):
    "compile=True with compile_mode reduce-overhead (no CUDA graphs on the CPU) trains the same weights as eager, to rounding."
    import json, subprocess, sys
    r = subprocess.run([sys.executable, '-c', COMPILED, 'reduce-overhead'], capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'TORCHINDUCTOR_CACHE_DIR': str(tmp_path/'inductor')})
    assert r.returncode == 0, r.stderr[-3000:]
    d = json.loads(r.stdout.strip().splitlines()[-1])
    assert d['compiled'] and not d['graphs'] and d['step'] == 10, d
    assert d['gap'] < 1e-4, d

def test_cudagraph_steps_are_marked(digits, monkeypatch):
    "Where the step replays CUDA graphs, each step starts with cudagraph_mark_step_begin; elsewhere never."
    marks, train = [], digits[0]
    monkeypatch.setattr(torch.compiler, 'cudagraph_mark_step_begin', lambda: marks.append(1))
    t = Trainer(lenet(train), TrainHparams(precision='fp32', training_steps='3it'), train, device='cpu')
    t.fit(); assert marks == []
    t._graphs = True          # what uses_cudagraphs(hp, 'cuda') gives for compile=True, compile_mode='reduce-overhead'
    t.fit(0, 3); assert len(marks) == 3

def test_fused_optimizer_choice(digits):
    "fused_optimizer: 'auto' is foreach on the CPU; 'on' fuses SGD and Adam; a bad value names the choices."
    from ticketlab.train import make_optimizer, fused_kernels
    net = lenet(digits[0])
    test = lambda **kw: make_optimizer(net, TrainHparams(**kw)).param_groups[0]['fused']
    assert not test() and test(fused_optimizer='on') and test(fused_optimizer='on', optimizer='adam', lr=1e-3)
    assert not test(fused_optimizer='off')
    with pytest.raises(ValueError, match='choose one of auto, on, off'): TrainHparams(fused_optimizer='always')
    assert fused_kernels('auto', 'cuda') and not fused_kernels('auto', 'cpu')
