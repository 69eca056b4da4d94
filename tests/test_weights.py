"Invariants of ticketlab.weights: interpolation and perturbation stay in a mask; lerp_state is combine_states of two."
import numpy as np, pytest, torch
from ticketlab.core import seed_all
from ticketlab.masks import prune_to_density
from ticketlab.models import get_model
from ticketlab.weights import lerp_state, combine_states, mask_state, perturb_state, weight_distances

@pytest.fixture(scope='module')
def lenets():
    "Two LeNet-300-100s of different initialisations (state dicts)."
    ws = []
    for s in (1, 2):
        seed_all(s); ws.append({k: v.detach().clone() for k, v in get_model('lenet_300_100', 10, (1, 8, 8), width=0.5).state_dict().items()})
    return ws

def test_interpolating_masked_networks_stays_in_the_mask(lenets):
    w1, w2 = lenets
    m = prune_to_density({k: v for k, v in w1.items() if k.endswith('weight')}, 0.2)
    a, b = mask_state(w1, m), mask_state(w2, m)
    for x in np.linspace(0, 1, 11):
        w = lerp_state(a, b, float(x))
        for n in m: assert (w[n][~m[n]] == 0).all()
    p = perturb_state(a, 10.0, m, seed=3)
    for n in m: assert (p[n][~m[n]] == 0).all()
    assert abs(weight_distances(a, p, m)['l2'] - 10.0) < 1e-4

@pytest.mark.parametrize('alpha', [0.0, 0.3, 0.5, 0.8, 1.0, 1.5])
def test_lerp_state_is_combine_states_of_two(alpha):
    g = torch.Generator().manual_seed(0)
    a = {'w': torch.randn(5, generator=g), 'bn.running_var': torch.rand(3, generator=g), 'bn.num_batches_tracked': torch.tensor(2)}
    b = {'w': torch.randn(5, generator=g), 'bn.running_var': torch.rand(3, generator=g), 'bn.num_batches_tracked': torch.tensor(7)}
    w, c = lerp_state(a, b, alpha), combine_states([a, b], [1 - alpha, alpha])
    for k in a: assert torch.equal(w[k], c[k]), k
    assert torch.equal(w['bn.num_batches_tracked'], (a if alpha <= 0.5 else b)['bn.num_batches_tracked'])
    assert (w['bn.running_var'] >= 0).all()
    if alpha in (0.0, 1.0): assert torch.equal(w['w'], (a if alpha == 0 else b)['w'])
    with pytest.raises(ValueError, match='differ in keys'): lerp_state(a, {'w': b['w']}, alpha)

def test_a_network_combined_with_itself_is_exactly_itself(lenets):
    "What makes the barrier between a network and itself exactly 0, and the corners of a 2-D slice the networks themselves."
    w1, w2 = lenets
    for x in (0.0, 0.1, 0.5, 0.9, 1.0):
        w = lerp_state(w1, w1, x)
        assert all(torch.equal(w[k], w1[k]) for k in w1)
    for states, c, want in (([w1, w2, w1], [1, 0, 0], w1), ([w1, w2, w1], [0, 1, 0], w2), ([w1, w1, w1], [0.2, 0.3, 0.5], w1)):
        w = combine_states(states, c)
        assert all(torch.equal(w[k], want[k]) for k in want)
