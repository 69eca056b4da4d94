"The runs layer: specs and their identity, lists of runs, the dense run, branches, replicates, typed keys."
import pytest, torch
from torch import nn
from ticketlab.data import load_dataset, class_balanced_subset, corrupt_labels, blur
from ticketlab.masks import Mask
from ticketlab.store import Store, Run
from ticketlab.train import TrainHparams, Callback
from ticketlab.runs import (Plan, plan, RunSpec, train_runs, train_run, dense_run, ensure_checkpoints, branch, branch_specs,
                            replicate, spec_run, data_key, build_model)

HP = TrainHparams(dataset='digits', model='lenet_300_100', training_steps='2ep', batch_size=64, lr=0.05, precision='fp32')

@pytest.fixture(scope='module')
def digits(): return load_dataset('digits')

def test_plan_converts_steps_once():
    p = plan(HP, 1437)
    assert p == Plan(22, 44)
    assert [p.it(s) for s in ('0it', '1ep', '1ep3it', 7)] == [0, 22, 25, 7]
    with pytest.raises(ValueError, match='after the end of training, 44it'): p.it('3ep')

def test_runs_on_different_data_never_share_an_entry(tmp_path, digits):
    train, test = digits
    variants = {'plain': train, 'subset0': class_balanced_subset(train, 30, 0), 'subset1': class_balanced_subset(train, 30, 1),
                'noisy': corrupt_labels(train, 0.1, 0)[0], 'blur': blur(train, 2)}
    st = Store(tmp_path)
    runs = {k: spec_run(RunSpec(HP, data=(v, test)), st) for k, v in variants.items()}
    assert len({r.path for r in runs.values()}) == len(variants)
    assert runs['plain'].path == st.run('train', HP).path          # the data HP names adds nothing to the key
    assert data_key(HP, variants['subset0']) == {'data': variants['subset0'].id}

def test_train_runs_trains_a_list_once_each(tmp_path, digits):
    train, test = digits
    sub = class_balanced_subset(train, 20, 0)
    st = Store(tmp_path)
    specs = [RunSpec(HP, data=(sub, test)), RunSpec(HP.replace(init_seed=1), data=(sub, test)), RunSpec(HP, data=(sub, test))]
    a, b, a2 = train_runs(specs, st, progress=False)
    assert a.done and b.done and a is a2 and a.path != b.path
    assert a.key == {'data': sub.id}
    assert train_runs(specs[:1], st, progress=False)[0] == a       # reused, not retrained

def test_custom_model_params_and_loss_must_be_named(digits):
    for kw, name in ((dict(model=lambda hp, d: nn.Linear(64, 10)), 'model'), (dict(params=lambda m: []), 'params'),
                     (dict(loss_fn=lambda o, y: o.sum()), 'loss')):
        with pytest.raises(ValueError, match=f"key\\['{name}'\\]"): RunSpec(HP, **kw)
    with pytest.raises(TypeError, match='train_runs takes RunSpecs'): train_runs([HP])

def test_frozen_weights_train_other_params_through_the_runs_layer(tmp_path, digits):
    "A spec with its own model factory and parameter selection: the weights stay bit-identical, the biases train."
    def factory(hp, train): return build_model(hp, train)
    biases = lambda m: [p for n, p in m.named_parameters() if n.endswith('bias')]
    run = train_run(HP, Store(tmp_path), data=digits, model=factory, params=biases, key={'model': 'lenet_300_100', 'params': 'biases'},
                    progress=False)
    w0, w1 = run.weights(0) if run.has_checkpoint(0) else build_model(HP, digits[0]).state_dict(), run.weights(44)
    for n in w1:
        if n.endswith('weight'): assert torch.equal(w0[n], w1[n]), n
    assert any(not torch.equal(w0[n], w1[n]) for n in w1 if n.endswith('bias'))

def test_build_model_leaves_the_global_rng_alone(digits):
    torch.manual_seed(3); a = torch.rand(3)
    torch.manual_seed(3); build_model(HP, digits[0]); b = torch.rand(3)
    assert torch.equal(a, b)

def test_dense_run_replays_missing_rewind_checkpoints_exactly(tmp_path, digits):
    st = Store(tmp_path)
    d = dense_run(HP, ['0it', '5it'], st, data=digits, progress=False)
    assert d.checkpoint_steps() == [0, 5, 44]
    w5 = d.weights(5)
    d.checkpoint_path(5).unlink()
    d2 = dense_run(HP, ['5it', '1ep'], st, data=digits, progress=False)
    assert d2 == d and d.checkpoint_steps() == [0, 5, 22, 44]
    for k, v in w5.items(): assert torch.equal(v, d.weights(5)[k]), k
    with pytest.raises(ValueError, match='rewind step 3ep'): dense_run(HP, ['3ep'], st, data=digits)

def test_branch_children_start_from_the_parent_at_k_with_its_mask(tmp_path, digits):
    st = Store(tmp_path)
    d = dense_run(HP, ['5it'], st, data=digits, progress=False)
    w = d.weights(5)
    mask = Mask({n: (torch.rand_like(v) < 0.5).float() for n, v in w.items() if n.endswith('weight')})
    kids = branch(d, '5it', 2, st, mask=mask, data=digits, progress=False, track='1ep')
    assert [k.key['child'] for k in kids] == [0, 1]
    assert all(k.key['parent'] == d.ref and k.key['step'] == 5 and k.key['mask'] == mask.hash for k in kids)
    assert kids[0].hparams.data_seed != kids[1].hparams.data_seed
    for k in kids:
        assert k.checkpoint_steps() == [5, 27, 44]
        for n, m in mask.items(): assert (k.weights(44)[n][m == 0] == 0).all()
    assert st.find('branch', parent=d) == kids
    assert st.find('branch', parent=d, child=1) == [kids[1]]
    assert st.find('branch', parent=d, mask='other') == []
    with pytest.raises(FileNotFoundError, match='no checkpoint at step 6'): branch_specs(d, '6it', data=digits)

def test_one_replicate_rule():
    assert replicate(HP, 0) == HP
    r2 = replicate(HP, 2)
    assert (r2.init_seed, r2.data_seed) == (HP.init_seed + 2, HP.data_seed + 2)
    with pytest.raises(ValueError, match='replicate must be >= 0'): replicate(HP, -1)

def test_found_runs_rebuild_their_hparams(tmp_path):
    st = Store(tmp_path)
    r = st.run('train', HP).begin(); r.mark_done({})
    (found,) = st.find('train')
    assert found == r and found.hparams == HP and Run.load(r.path).hparams == HP

class _CountSteps(Callback):
    def __init__(self): self.n = 0
    def after_step(self, t): self.n += 1

def test_a_stopped_run_is_the_full_runs_prefix(tmp_path, digits):
    train, test = digits
    st, hp = Store(tmp_path), HP.replace(schedule='multistep', milestones='20it', warmup='5it')   # the LR changes inside [0, t)
    full = train_run(hp, st, checkpoints=[30], data=digits, progress=False)
    cb = _CountSteps()
    stopped = train_run(hp, st, stop=30, data=digits, progress=False, callbacks=[cb])
    assert cb.n == 30 and stopped.summary()['step'] == 30 and stopped.checkpoint_steps() == [30]
    w, ref = stopped.weights(30), full.weights(30)
    assert all(torch.equal(w[k], ref[k]) for k in ref)                   # fp32: bit-identical to the full run at t
    again = _CountSteps()
    assert train_run(hp, st, stop=30, data=digits, progress=False, callbacks=[again]).path == stopped.path and again.n == 0
    assert stopped.key == {'stop': 30} and full.name == hp.hash          # no stop: the key (and name) of before
    assert spec_run(RunSpec(hp, stop='2ep', data=digits), st).path == full.path   # a stop at the end is the full run
    with pytest.raises(ValueError, match='after stop'): spec_run(RunSpec(hp, stop=30, checkpoints=[40], data=digits), st)

def test_a_run_continued_from_a_checkpoint_keeps_the_optimizer_state(tmp_path, digits):
    st = Store(tmp_path)
    full = train_run(HP, st, data=digits, progress=False)
    first = train_run(HP, st, stop=20, data=digits, progress=False)
    rest = train_run(HP, st, init=first.load_checkpoint(20), start=20, key={'continues': first.ref}, data=digits, progress=False)
    w, ref = rest.weights(44), full.weights(44)
    assert all(torch.equal(w[k], ref[k]) for k in ref)                   # stop + continue = the uninterrupted run
