"""A second worker for the `cpu` run of papers/edge_popup.ipynb on a 2-core machine.

The notebook trains its runs one after another. This script, started beside it with the same TICKETLAB_HOME, trains
the same runs (the same specs, so the same store entries) in the opposite order: Figure 7's last point first, Figure
3's first point last, so that two cores work at once and the two meet in the middle. It takes the presets, the data
and the hyperparameters from the notebook itself (its cell that defines `PRESETS` and its cell that defines `data` and
`hp`), and builds the sweep points with the notebook's own expressions, so it cannot drift from it. Each run is trained
once: a process that asks for a run the other is training waits on the run's lock and then reuses it
(`ticketlab.runs`). The numbers in the notebook are the same as if it had trained everything itself; only the wall
time differs.

    TICKETLAB_HOME=<store> OMP_NUM_THREADS=1 python papers/results/edge_popup_worker.py [smoke|cpu|paper]
"""
import json, sys, time
from pathlib import Path

preset = sys.argv[1] if len(sys.argv) > 1 else 'cpu'
nb = json.loads((Path(__file__).parents[1]/'edge_popup.ipynb').read_text())
cells = [''.join(c['source']) for c in nb['cells'] if c['cell_type'] == 'code']
ns = dict(preset=preset, out_dir=f'/tmp/edge_popup_worker-{preset}')
found = [src for src in cells if 'PRESETS = {' in src or 'hp = supermask_train_hparams(' in src]
if len(found) != 2: raise SystemExit(f'expected the preset cell and the data cell in edge_popup.ipynb, found {len(found)}')
for src in found: exec(src, ns)
P, hp, data, store = ns['P'], ns['hp'], ns['data'], ns['store']
from ticketlab.edgepopup import SupermaskHparams, supermask_points, supermask_sweep

S = SupermaskHparams
jobs = [  # (figure, points, replicates), as the notebook's cells build them, in the notebook's order
    ('Figure 3', supermask_points(P['models'], [P['width']], [S(density=k, weight_init=P['fig3_init']) for k in P['densities']]), P['replicates']),
    ('Figure 4', supermask_points([P['wide_model']], P['widths'], [S(density=P['wide_density'], weight_init=P['fig3_init'])]), P['replicates']),
    ('Figure 6', supermask_points([P['compare_model']], [P['width']], [S(method=m, density=0.5, weight_init=w) for w in P['methods_inits']
                                                                    for m in ('edge_popup', 'bernoulli')]), P['compare_replicates']),
    ('Figure 7', supermask_points([P['compare_model']], [P['width']], [S(density=0.5, weight_init=w) for w in P['inits']], dense=False),
     P['compare_replicates'])]
t0 = time.time()
for fig, points, reps in reversed(jobs):
    for pt in reversed(points):
        supermask_sweep(hp, [pt], reps, store, data=data)
        print(f'[{time.time() - t0:6.0f} s] {fig}: {pt[0]} x{pt[1]:g} {"learned dense" if pt[2] is None else f"{pt[2].method}, k={pt[2].density:g}, {pt[2].weight_init}"}', flush=True)
