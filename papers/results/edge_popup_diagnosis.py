"""Why the `cpu` preset of papers/edge_popup.ipynb trains without augmentation, draws Figure 3's weights scaled, and
gives Zhou et al.'s masks weight decay 0: the runs that show it, side by side, written to `diagnosis.csv`.

Each row is one run of the run store (the notebook's data and hyperparameters, taken from the notebook's own cells as
`edge_popup_worker.py` takes them), Conv-4 at the preset's width on the preset's 5,000 images for the preset's 20 epochs:

- `augmentation`: the learned dense network (learning rate 0.01) with and without pad-and-crop and flip. The claim it
  backs: with augmentation the dense network is far from its training plateau after 20 epochs.
- `scaling`: edge-popup at k = 0.1, the signed Kaiming constant unscaled and scaled by sqrt(1/k). The claim: unscaled,
  the network has not left chance when the schedule ends.
- `bernoulli_weight_decay`: Zhou et al.'s masks (learning rate 200, Kaiming normal) with the text's weight decay 1e-4
  and the authors' configs' 0. The claim: at 1e-4 the masks stay random and the accuracy at chance.

Runs that the notebook also trains (the dense network without augmentation, the scaled k = 0.1 network, the Bernoulli
masks at weight decay 0) are the same store entries, trained once.

    TICKETLAB_HOME=<store> OMP_NUM_THREADS=1 python papers/results/edge_popup_diagnosis.py [out_dir]
"""
import sys, time
from pathlib import Path
import pandas as pd

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent/'edge_popup-cpu')
from ticketlab.papers import notebook_namespace
ns = notebook_namespace(Path(__file__).parents[1]/'edge_popup.ipynb', ['PRESETS = {', 'hp = supermask_train_hparams('], 'cpu')   # its preset and data cells
P, hp, data, store = ns['P'], ns['hp'], ns['data'], ns['store']
from ticketlab.edgepopup import SupermaskHparams as S, supermask_sweep

m, w = P['compare_model'], P['width']
t0, rows = time.time(), []
def add(question, setting, h, point, **kw):
    df = supermask_sweep(h, [point], 1, store, data=data, **kw).assign(question=question, setting=setting, augment=h.augment)
    rows.append(df); r = df.iloc[0]
    print(f'[{time.time() - t0:5.0f} s] {question}: {setting}: train {r.train_accuracy:.4f}, test {r.test_accuracy:.4f}', flush=True)

add('augmentation', 'dense, augmented', hp.replace(augment=True), (m, w, None))
add('augmentation', 'dense, not augmented', hp.replace(augment=False), (m, w, None))
add('scaling', 'edge-popup k=0.1, signed Kaiming constant', hp, (m, w, S(density=0.1, weight_init='signed_kaiming_constant')))
add('scaling', 'edge-popup k=0.1, scaled signed Kaiming constant', hp, (m, w, S(density=0.1, weight_init='scaled_signed_kaiming_constant')))
add('bernoulli_weight_decay', 'Zhou et al., weight decay 1e-4 (the text)', hp, (m, w, S(method='bernoulli', weight_init='kaiming_normal')),
    wds={'bernoulli': 1e-4})
add('bernoulli_weight_decay', "Zhou et al., weight decay 0 (the authors' configs)", hp, (m, w, S(method='bernoulli', weight_init='kaiming_normal')))
cols = ['question', 'setting', 'model', 'width', 'method', 'density', 'weight_init', 'augment', 'lr', 'weight_decay', 'kept',
        'train_accuracy', 'test_accuracy', 'at_chance', 'run']
out.mkdir(parents=True, exist_ok=True)
pd.concat(rows)[cols].to_csv(out/'diagnosis.csv', index=False)
print(f'wrote {out/"diagnosis.csv"} ({time.time() - t0:.0f} s)')
