"ticketlab.evaluate: evaluate_states is evaluate network by network in fp32, close to it in bf16; EvalCB's history."
import pytest, torch
from conftest import trained
from ticketlab.core import seed_all
from ticketlab.data import load_dataset
from ticketlab.models import get_model
from ticketlab.train import TrainHparams, Trainer
from ticketlab.evaluate import evaluate, evaluate_states, EvalCB, history_frame
from ticketlab.weights import lerp_state



def test_evaluate_states_is_evaluate_in_fp32(small_resnet):
    net, w1, w2, _, test = small_resnet
    res = evaluate_states(net, [w1, w2], test, device='cpu', per_example=True, chunk=1)
    for w, r in zip([w1, w2], res):
        net.load_state_dict(w)
        ref = evaluate(net.cpu(), test, per_example=True)
        assert r['loss'] == ref['loss'] and torch.equal(r['losses'], ref['losses']) and r['error'] == 1 - ref['accuracy']

def test_bf16_evaluation_close_to_fp32(small_resnet):
    net, w1, w2, _, test = small_resnet
    ws = [lerp_state(w1, w2, a) for a in (0, .5, 1)]
    r32 = evaluate_states(net, ws, test, device='cpu', precision='fp32')
    r16 = evaluate_states(net, ws, test, device='cpu', precision='bf16')
    for a, b in zip(r32, r16): assert abs(a['loss'] - b['loss']) < 0.05 * max(1, a['loss'])

def test_evalcb_logs_every_step_asked_and_the_end_once():
    train, test = load_dataset('digits')
    torch.manual_seed(0)
    hp = TrainHparams(training_steps='2ep', precision='fp32')
    tr = Trainer(get_model(hp.model, train.num_classes, train.shape), hp, train, device='cpu',
                 callbacks=[EvalCB({'test': test, 'train': train}, every='1ep')]).fit()
    h = history_frame(tr.history)
    assert list(h.columns) == ['step', 'epoch', 'split', 'loss', 'accuracy']
    assert h.step.tolist() == [tr.ipe] * 2 + [2 * tr.ipe] * 2 and h.split.tolist() == ['test', 'train'] * 2
    assert h.accuracy.iloc[-2] == evaluate(tr.model, test)['accuracy']
