"§5 and App. B.1 of the data-diet paper (ticketlab.diet_warmup): warmup on a subset, then all the data; pre-training gradient norms."
import numpy as np, pytest, torch
from ticketlab.data import load_dataset
from ticketlab.store import Store
from ticketlab.train import TrainHparams, Trainer, lr_schedule
from ticketlab.runs import build_model, train_run
from ticketlab.datadiet import diet_subset
from ticketlab.diet_warmup import (warmup_hparams, warmup_subset_run, warmup_experiment, pretraining_gradient_norms, FIG6_HPARAMS,
                                   WARMUP_COLUMNS)

HP = TrainHparams(dataset='digits', training_steps='2ep', warmup='8it', batch_size=64, lr=0.1, precision='fp32')   # T = 44

@pytest.fixture(scope='module')
def digits(): return load_dataset('digits')

def test_paper_recipe_and_schedule_on_a_subset():
    assert (FIG6_HPARAMS.batch_size, FIG6_HPARAMS.lr, FIG6_HPARAMS.milestones, FIG6_HPARAMS.training_steps) == (1024, 3.2, '80ep,120ep', '160ep')
    hp = FIG6_HPARAMS.replace(warmup='1ep')
    f, g = lr_schedule(hp, 48), lr_schedule(warmup_hparams(hp, 50000), 10)     # 48 it/epoch on all data, 10 on a subset
    assert [f(s) for s in (0, 47, 48, 3839, 3840, 7679)] == [g(s) for s in (0, 47, 48, 3839, 3840, 7679)]

def test_warmup_on_a_subset_then_all_data_is_one_run(tmp_path, digits):
    train, test = digits
    S = diet_subset(train, 'random', 128)
    r = warmup_subset_run(HP, S, Store(tmp_path), data=digits)
    h = warmup_hparams(HP, train)
    t1 = Trainer(build_model(HP, train), h, S).fit(0, 8)
    t2 = Trainer(t1.model, h, train); t2.load_state(t1.state()); t2.fit(8)
    assert all(torch.equal(t2.model.state_dict()[k], v) for k, v in r.weights(44).items())
    assert warmup_subset_run(HP, train, Store(tmp_path), data=digits) == train_run(HP, Store(tmp_path), data=digits, progress=False)

def test_warmup_experiment_rows(tmp_path, digits):
    df = warmup_experiment(HP, [0, 8], ('random',), [128], store=Store(tmp_path), data=digits)
    assert list(df.columns) == WARMUP_COLUMNS and len(df) == 3
    assert sorted(zip(df.subset, df.warmup)) == [('all', 0), ('all', 8), ('random', 8)] and df.test_accuracy.between(0, 1).all()

def test_pretraining_gradient_norms_every_step(tmp_path, digits):
    train, _ = digits
    gn = pretraining_gradient_norms(HP, {'random': diet_subset(train, 'random', 128)}, 12, Store(tmp_path), data=digits)
    assert gn.step.tolist() == list(range(12)) and np.isfinite(gn.grad_norm).all() and (gn.grad_norm > 0).all()
