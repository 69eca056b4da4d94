"EL2N and GraNd scores, the `Scores` artifact and subset selection (ticketlab.el2n), on tiny models and digits."
import json, pickle
from pathlib import Path
import numpy as np, pytest, torch
from torch import nn
from ticketlab.core import seed_all
from ticketlab.data import load_dataset, class_balanced_subset, corrupt_labels
from ticketlab.loader import eval_batches
from ticketlab.models import get_model
from ticketlab.train import TrainHparams, Trainer
from ticketlab.el2n import (ensemble_hparams, error_l2_norms, el2n_scores, grad_norms, grand_scores, _grand_loop,
                            Scores, scores_meta, list_scores, select_by_score, subset_by_score, plot_scores, SELECTIONS)

@pytest.fixture(scope='module')
def digits():
    train, _ = load_dataset('digits')
    return train

@pytest.fixture(scope='module')
def small(digits): return digits.subset(torch.arange(40))

def _lenet(seed, data):
    seed_all(seed)
    return get_model('lenet_300_100', data.num_classes, data.shape, width=0.1)

def _softmax(z): e = np.exp(z - z.max(1, keepdims=True)); return e/e.sum(1, keepdims=True)

# --- EL2N ---------------------------------------------------------------------------------------------------------

def test_el2n_matches_hand_computation(small):
    "Def. 2.1 / App. A: mean over K of ||softmax(f(x)) - onehot(y)||_2, computed in numpy from the logits."
    nets = [_lenet(s, small) for s in (1, 2)]
    x, y = next(eval_batches(small, len(small), 'cpu'))
    with torch.no_grad(): logits = [n(x).double().numpy() for n in nets]
    onehot = np.eye(small.num_classes)[y.numpy()]
    norms = [np.linalg.norm(_softmax(z) - onehot, axis=1) for z in logits]
    by_hand = np.mean(norms, 0)
    got = el2n_scores([n.state_dict() for n in nets], small, model=_lenet(0, small), batch_size=7)
    assert got.dtype == np.float64 and got.shape == (len(small),)
    np.testing.assert_allclose(got, by_hand, atol=1e-6)
    np.testing.assert_allclose(error_l2_norms(nets[1], small).numpy(), norms[1], atol=1e-6)
    np.testing.assert_allclose(el2n_scores(nets, small), by_hand, atol=1e-6)      # modules work as well as states
    assert not np.allclose(norms[0], norms[1])                                     # the two networks really differ

def _bn_net(data, seed=0):
    "A tiny conv net with BatchNorm whose running statistics are not the identity (so that eval mode matters)."
    seed_all(seed)
    c = data.shape[0]
    net = nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.BatchNorm2d(4),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, data.num_classes))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5); m.running_var.uniform_(0.5, 2); m.weight.uniform_(0.5, 1.5); m.bias.uniform_(-0.1, 0.1)
    return net

def test_el2n_uses_the_labels_given_and_eval_mode_bn(small):
    "The score is against the labels in `data` (the corrupted ones under label noise), with BatchNorm in eval mode."
    net = _bn_net(small)
    noisy, changed = corrupt_labels(small, 0.5, seed=0)
    a, b = el2n_scores(net, small), el2n_scores(net, noisy)
    assert np.allclose(a[~changed.numpy()], b[~changed.numpy()]) and not np.allclose(a[changed.numpy()], b[changed.numpy()])
    whole, pieces = el2n_scores(net, small, batch_size=len(small)), el2n_scores(net, small, batch_size=3)
    np.testing.assert_allclose(whole, pieces, atol=1e-6)                           # eval mode: batch-independent
    assert net.training                                                             # the caller's mode is restored

def test_el2n_errors(small):
    with pytest.raises(ValueError, match='need model='): el2n_scores([_lenet(0, small).state_dict()], small)
    with pytest.raises(ValueError, match='no networks'): el2n_scores([], small)

def test_ensemble_hparams():
    hps = ensemble_hparams(TrainHparams(init_seed=5, data_seed=7), 3)
    assert [(h.init_seed, h.data_seed) for h in hps] == [(5, 7), (6, 8), (7, 9)]
    assert len({h.hash for h in hps}) == 3
    with pytest.raises(ValueError, match='K must be'): ensemble_hparams(TrainHparams(), 0)

# --- GraNd --------------------------------------------------------------------------------------------------------

def test_grand_vmap_equals_loop_with_batchnorm(small):
    data = small.subset(torch.arange(24))
    nets = [_bn_net(data, s) for s in (0, 1)]
    v = grand_scores(nets, data, batch_size=10)
    loop = _grand_loop(nets, data)
    assert v.dtype == np.float64 and v.shape == (len(data),)
    np.testing.assert_allclose(v, loop, rtol=1e-5, atol=1e-5)
    one = grad_norms(nets[0], data).double().numpy()
    np.testing.assert_allclose(one, _grand_loop(nets[0], data), rtol=1e-5, atol=1e-5)
    assert not np.allclose(one, v)                                                  # the mean over K is not one network
    assert all(n.training for n in nets)

def test_grand_gradient_is_over_all_parameters(small):
    "All trainable parameters by default (incl. biases, BN scale/shift); `param_names` restricts; frozen ones are skipped."
    data = small.subset(torch.arange(8))
    net = _bn_net(data)
    everything = grand_scores(net, data)
    only_fc = grand_scores(net, data, param_names=['8.weight', '8.bias'])
    assert (only_fc < everything).all()
    np.testing.assert_allclose(only_fc, _grand_loop(net, data, param_names=['8.weight', '8.bias']), rtol=1e-5, atol=1e-6)
    for n, p in net.named_parameters():
        if n not in ('8.weight', '8.bias'): p.requires_grad_(False)
    np.testing.assert_allclose(grand_scores(net, data), only_fc, rtol=1e-6)
    with pytest.raises(ValueError, match='unknown parameter'): grand_scores(net, data, param_names=['nope'])

# --- Scores artifacts ---------------------------------------------------------------------------------------------

@pytest.fixture
def scores(digits):
    v = np.random.default_rng(0).random(len(digits))
    return Scores(v, 'digits-el2n', scores_meta('el2n', digits, ensemble_hparams(TrainHparams(), 2), t=50))

def test_scores_meta_and_hash(scores, digits):
    m = scores.meta
    assert (m['kind'], m['K'], m['t'], m['data']['n'], m['data']['name']) == ('el2n', 2, 50, len(digits), 'digits')
    assert len(m['train_hashes']) == 2 and m['train']['model'] == 'lenet_300_100' and 'init_seed' not in m['train']
    assert len(scores.hash) == 16 and int(scores.hash, 16) >= 0
    assert Scores(scores.values, 'another', {**m, 'created': 'x'}).hash == scores.hash       # when is not what
    assert Scores(scores.values, 'x', {**m, 't': 51}).hash != scores.hash
    v = scores.values.copy(); v[0] = np.nextafter(v[0], 2)
    assert Scores(v, 'x', m).hash != scores.hash
    noisy, _ = corrupt_labels(digits, 0.1, seed=0)
    assert scores_meta('el2n', noisy)['data']['labels'] != m['data']['labels']

def test_scores_npz_roundtrip(scores, tmp_path):
    p = scores.save(tmp_path)
    assert p == tmp_path/'digits-el2n.npz' and not [f for f in tmp_path.iterdir() if f.name.startswith('.')]
    back = Scores.load('digits-el2n', root=tmp_path)
    assert back.values.tobytes() == scores.values.tobytes() and back.meta == scores.meta and back.hash == scores.hash
    assert Scores.load(p).hash == scores.hash                                      # by path
    assert scores.save(tmp_path) == p                                              # the same again: fine
    other = Scores(scores.values[::-1], 'digits-el2n', scores.meta)
    with pytest.raises(FileExistsError, match='holds other scores'): other.save(tmp_path)
    other.save(tmp_path, overwrite=True)
    assert Scores.load('digits-el2n', root=tmp_path).hash == other.hash
    df = list_scores(tmp_path)
    assert df.columns.tolist() == ['name', 'kind', 'n', 'K', 't', 'hash', 'created', 'path']
    row = df.iloc[0]
    assert (row['name'], row.kind, row.n, row.K, row.t, row.hash, row.path) == ('digits-el2n', 'el2n', len(scores), 2, 50, other.hash, str(p))
    with pytest.raises(FileNotFoundError, match="no scores named 'nope'.*digits-el2n"): Scores.load('nope', root=tmp_path)

def test_scores_default_root_is_ticketlab_home(scores, tmp_path, monkeypatch):
    from ticketlab.core import ticketlab_home
    monkeypatch.setenv('TICKETLAB_HOME', str(tmp_path))          # not the session's home: later tests expect no saved scores there
    p = scores.save()
    assert p.parent == ticketlab_home()/'scores'
    assert Scores.load('digits-el2n').hash == scores.hash and 'digits-el2n' in list_scores().name.tolist()

def test_scores_npy_and_csv_roundtrip(scores, tmp_path):
    back = Scores.from_npy(scores.to_npy(tmp_path/'s.npy'))
    assert back.values.tobytes() == scores.values.tobytes() and back.name == scores.name and back.hash == scores.hash
    assert np.load(tmp_path/'s.npy', allow_pickle=False).dtype == np.float64          # plain .npy for other code
    assert json.loads((tmp_path/'s.json').read_text())['hash'] == scores.hash
    bare = tmp_path/'bare.npy'; np.save(bare, scores.values)
    assert Scores.from_npy(bare).name == 'bare' and Scores.from_npy(bare, meta=scores.meta, name='n').hash == scores.hash
    c = Scores.from_csv(scores.to_csv(tmp_path/'s.csv'), 'digits-el2n', scores.meta)
    assert c.values.tobytes() == scores.values.tobytes() and c.hash == scores.hash
    assert (tmp_path/'s.csv').read_text().splitlines()[0] == 'index,score'
    (tmp_path/'rev.csv').write_text('index,score\n2,0.3\n0,0.1\n1,0.2\n')
    assert Scores.from_csv(tmp_path/'rev.csv').values.tolist() == [0.1, 0.2, 0.3]
    (tmp_path/'gap.csv').write_text('index,score\n0,0.1\n2,0.3\n')
    with pytest.raises(ValueError, match='each once'): Scores.from_csv(tmp_path/'gap.csv')
    (tmp_path/'nocol.csv').write_text('i,s\n0,1\n')
    with pytest.raises(ValueError, match='expected a `score` column'): Scores.from_csv(tmp_path/'nocol.csv')

class _Boom:
    "Unpickling this would create a marker file: loading must never get that far."
    def __init__(self, path): self.path = path
    def __reduce__(self): return (Path.touch, (Path(self.path),))

def test_loading_pickle_bearing_files_fails_safely(tmp_path):
    marker = tmp_path/'unpickled'
    evil = np.array([_Boom(marker)], dtype=object)
    np.save(tmp_path/'obj.npy', evil, allow_pickle=True)
    with pytest.raises(ValueError, match='not a plain numeric'): Scores.from_npy(tmp_path/'obj.npy')
    np.savez(tmp_path/'evil.npz', values=evil, name=np.array('evil'), meta=np.array('{}'), hash=np.array('0' * 16))
    with pytest.raises(ValueError, match='not a ticketlab scores file'): Scores.load('evil', root=tmp_path)
    (tmp_path/'raw.npz').write_bytes(pickle.dumps(_Boom(marker)))                     # a bare pickle named .npz
    with pytest.raises(ValueError, match='not a ticketlab scores file'): Scores.load('raw', root=tmp_path)
    (tmp_path/'raw.npy').write_bytes(pickle.dumps(_Boom(marker)))
    with pytest.raises(ValueError, match='not a plain numeric'): Scores.from_npy(tmp_path/'raw.npy')
    assert not marker.exists()
    with pytest.warns(UserWarning, match='not a ticketlab scores file'): assert len(list_scores(tmp_path)) == 0

def test_tampered_npz_is_rejected(scores, tmp_path):
    p = scores.save(tmp_path)
    with np.load(p, allow_pickle=False) as f: d = {k: f[k] for k in f.files}
    d['values'] = d['values'] + 1
    np.savez(p, **d)
    with pytest.raises(ValueError, match='corrupted'): Scores.load(p)

def test_scores_validation():
    for bad in ('', 'a/b', '../up', '.hidden', 'x' * 201, 'sp ace'):
        with pytest.raises(ValueError, match='bad scores name'): Scores([1.], bad)
    with pytest.raises(ValueError, match='finite'): Scores([1., np.inf], 'x')
    with pytest.raises(ValueError, match='1-D'): Scores(np.zeros((2, 2)), 'x')

# --- selection ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def ranked(digits):
    return np.random.default_rng(1).random(len(digits)), digits.y.numpy()

@pytest.mark.parametrize('which', SELECTIONS)
@pytest.mark.parametrize('balanced', [True, False])
def test_selection_exact_counts_no_duplicates(ranked, which, balanced):
    v, y = ranked
    for m in (0, 1, 10, 137, 500):
        idx = select_by_score(v, y, m, which, class_balanced=balanced)
        assert idx.dtype == np.int64 and len(idx) == m and len(np.unique(idx)) == m and (np.diff(idx) > 0).all()
        if balanced:
            counts = np.bincount(y[idx], minlength=10)
            assert counts.tolist() == [m//10 + (c < m % 10) for c in range(10)]

def test_easiest_below_hardest(ranked):
    v, y = ranked
    e, h = select_by_score(v, y, 300, 'easiest'), select_by_score(v, y, 300, 'hardest')
    assert v[e].max() < v[h].min()
    np.testing.assert_array_equal(np.sort(v[e]), np.sort(v)[:300])                   # unbalanced: the global extremes
    eb, hb = (select_by_score(v, y, 300, w, class_balanced=True) for w in ('easiest', 'hardest'))
    for c in range(10):
        ic = np.nonzero(y == c)[0]
        np.testing.assert_array_equal(np.sort(v[eb[y[eb] == c]]), np.sort(v[ic])[:30])
        np.testing.assert_array_equal(np.sort(v[hb[y[hb] == c]]), np.sort(v[ic])[-30:])

def test_default_balance_follows_the_paper(ranked):
    "§3: random subsets are 'distributed equally among all classes'; easiest/hardest are the M extreme scores."
    v, y = ranked
    assert np.bincount(y[select_by_score(v, y, 200, 'random')], minlength=10).tolist() == [20]*10
    np.testing.assert_array_equal(select_by_score(v, y, 200, 'easiest'), select_by_score(v, y, 200, 'easiest', class_balanced=False))

def test_random_selection_deterministic_per_seed(ranked, digits):
    v, y = ranked
    for bal in (True, False):
        a, b = (select_by_score(v, y, 100, 'random', class_balanced=bal, seed=3) for _ in range(2))
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, select_by_score(v, y, 100, 'random', class_balanced=bal, seed=4))
    np.testing.assert_array_equal(select_by_score(v, y, 100, 'random', seed=3), select_by_score(np.zeros(len(v)), y, 100, 'random', seed=3))
    sub = digits.subset(select_by_score(v, y, 200, 'random', seed=5))
    assert torch.equal(sub.x, class_balanced_subset(digits, 20, seed=5).x)        # same draws as the data module's

def test_selection_from_scores_object_and_tensor_labels(scores, digits):
    a = select_by_score(scores, digits.y, 50, 'hardest')
    np.testing.assert_array_equal(a, np.sort(np.argsort(-scores.values, kind='stable')[:50]))

def test_selection_errors(ranked):
    v, y = ranked
    with pytest.raises(ValueError, match='choose one of easiest, hardest, random'): select_by_score(v, y, 5, 'middle')
    with pytest.raises(ValueError, match=r'm must be in \[0, 1437\]'): select_by_score(v, y, 1438)
    with pytest.raises(ValueError, match='m must be in'): select_by_score(v, y, -1)
    with pytest.raises(ValueError, match='one score per label'): select_by_score(v[:5], y, 2)
    with pytest.raises(ValueError, match='always fits'): select_by_score(v, y, 1430, 'hardest', class_balanced=True)
    with pytest.raises(ValueError, match='finite'): select_by_score(np.r_[np.nan, v[1:]], y, 5)

def test_subset_by_score_is_known_by_the_scores(scores, digits, tmp_path):
    "A subset chosen by a score file is identified by the scores (name and hash) and the selection, not only its indices."
    easy = subset_by_score(digits, scores, 100, 'easiest')
    idx = select_by_score(scores, digits.y, 100, 'easiest')
    assert torch.equal(easy.x, digits.x[idx]) and torch.equal(easy.y, digits.y[idx])
    assert easy.identity == digits.identity + (('score_subset', 'digits-el2n', scores.hash, 100, 'easiest', False, None),)
    assert json.loads(json.dumps(easy.identity))[-1] == ['score_subset', 'digits-el2n', scores.hash, 100, 'easiest', False, None]
    assert subset_by_score(digits, scores, 100, 'easiest').id == easy.id                 # same call, same id
    assert easy.id != digits.subset(idx).id                                               # not just the indices
    ids = {easy.id, subset_by_score(digits, scores, 100, 'hardest').id, subset_by_score(digits, scores, 101, 'easiest').id,
           subset_by_score(digits, scores, 100, 'easiest', class_balanced=True).id,
           subset_by_score(digits, scores, 100, 'random').id, subset_by_score(digits, scores, 100, 'random', seed=1).id}
    assert len(ids) == 6
    # other scores under the same name that happen to select the same examples: still another subset
    same_order = Scores(scores.values * 2, 'digits-el2n', scores.meta)
    np.testing.assert_array_equal(select_by_score(same_order, digits.y, 100), idx)
    assert subset_by_score(digits, same_order, 100).id != easy.id
    assert subset_by_score(digits, Scores(scores.values, 'renamed', scores.meta), 100).id != easy.id
    # equal selections, equal ids: the seed of a deterministic selection and an explicit default balance change nothing
    assert subset_by_score(digits, scores, 100, 'easiest', seed=9).id == easy.id
    assert subset_by_score(digits, scores, 100, 'easiest', class_balanced=False).id == easy.id
    assert subset_by_score(digits, scores, 100, 'random', class_balanced=True).id == subset_by_score(digits, scores, 100, 'random').id
    # a saved and reloaded score selects the same subset under the same id
    assert subset_by_score(digits, Scores.from_npy(scores.to_npy(tmp_path/'s.npy')), 100).id == easy.id
    assert subset_by_score(digits.to('cpu'), scores, 100).id == easy.id

def test_subset_by_score_errors(scores, digits, small):
    with pytest.raises(TypeError, match='must be a Scores'): subset_by_score(digits, scores.values, 10)
    with pytest.raises(ValueError, match='one score per label'): subset_by_score(small, scores, 10)
    with pytest.raises(ValueError, match='choose one of easiest, hardest, random'): subset_by_score(digits, scores, 10, 'middle')

def test_plot_scores(scores, digits):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    ax = plot_scores(scores, np.where(digits.y.numpy() < 5, 'low', 'high'), bins=10)
    assert len(ax.patches) == 20 and ax.get_xlabel() == 'EL2N' and len(ax.get_legend().get_texts()) == 2
    plt.close('all')

def test_trained_ensemble_ranks_corrupted_labels_hard(digits):
    "App. A: scores computed on the corrupted data rank the corrupted examples as difficult."
    noisy, changed = corrupt_labels(digits, 0.1, seed=0)
    hps = ensemble_hparams(TrainHparams(batch_size=64, lr=0.05, training_steps='30ep', precision='fp32'), 2)
    nets = []
    for hp in hps:
        seed_all(hp.init_seed)
        nets.append(Trainer(get_model(hp.model, 10, noisy.shape, width=0.3), hp, noisy, device='cpu').fit(end=60).model)
    el2n, grand = el2n_scores(nets, noisy), grand_scores(nets, noisy, batch_size=512)
    c = changed.numpy()
    for s in (el2n, grand): assert s[c].mean() > 2*s[~c].mean()
    easiest = select_by_score(el2n, noisy.y, 500, 'easiest')
    assert c[easiest].mean() < 0.02

def test_ensemble_members_stop_at_t(digits, tmp_path):
    "App. A, step 1 ('train K networks ... for t iterations'): each member trains t steps, not its whole schedule; the same scores."
    from ticketlab.store import Store
    from ticketlab.runs import train_runs, RunSpec
    from ticketlab.el2n import ensemble_scores
    test = load_dataset('digits')[1]
    hp, t = TrainHparams(batch_size=64, lr=0.05, training_steps='30ep', precision='fp32', width=0.3), 40
    st = Store(tmp_path/'runs')
    s = ensemble_scores(hp, 2, t, store=st, data=(digits, test), root=tmp_path/'scores', progress=False, device='cpu')
    runs = st.runs('train')
    assert len(runs) == 2 and all(k == {'stop': t} for k in runs.key)         # two runs, each stopped at t
    done = [json.loads((st.root/'train'/r/'done.json').read_text())['step'] for r in runs.run]
    assert done == [t, t]
    nets = []
    for h in ensemble_hparams(hp, 2):
        seed_all(h.init_seed)
        nets.append(Trainer(get_model(h.model, 10, digits.shape, width=0.3), h, digits, device='cpu').fit(end=t).model)
    np.testing.assert_array_equal(s.values, el2n_scores(nets, digits))        # fp32, one device: bit for bit
