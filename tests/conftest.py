import os, tempfile
import torch

# Tests never touch the user's run store: one scratch TICKETLAB_HOME per test session (decoded data
# sets are cached there once and shared by the session's tests). Tests that check the store pass their
# own Store(tmp_path).
os.environ['TICKETLAB_HOME'] = tempfile.mkdtemp(prefix='ticketlab-test-home-')
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

import pytest

def trained(model, train, seed, epochs=3, lr=0.1, wd=1e-4):
    "`model` trained by SGD with data-order seed `seed`; its state dict (shared by test_evaluate and test_lmc)."
    from ticketlab.train import TrainHparams, Trainer
    hp = TrainHparams(training_steps=f'{epochs}ep', lr=lr, weight_decay=wd, data_seed=seed, precision='fp32', batch_size=128)
    t = Trainer(model, hp, train, device='cpu').fit()
    return {k: v.detach().clone() for k, v in t.model.state_dict().items()}

@pytest.fixture(scope='session')
def small_resnet():
    "Two tiny BatchNorm ResNets (different inits) trained briefly on synthetic data: BN statistics differ between them."
    from ticketlab.core import seed_all
    from ticketlab.data import load_dataset
    from ticketlab.models import get_model
    train, test = load_dataset('synthetic')
    ws = []
    for s in (0, 1):
        seed_all(s); net = get_model('resnet20', train.num_classes, train.shape, width=0.25)
        ws.append(trained(net, train, s, epochs=2))
    return net, ws[0], ws[1], train, test
