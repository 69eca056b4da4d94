"""A second worker for the `cpu` run of papers/edge_popup.ipynb on a 2-core machine.

The notebook trains its runs one after another. This script, started beside it with the same TICKETLAB_HOME, trains
the same runs (the same specs, so the same store entries) in the opposite order: App. C.2's trained subnetworks first
(after the supermasks they come from), then Figure 11's last point, ..., Figure 3's first point last, so that two
cores work at once and the two meet in the middle. It takes the presets, the data and the hyperparameters from the notebook itself (its cell that defines `PRESETS` and its cell that defines `data` and
`hp`), and builds the sweep points with the notebook's own expressions, so it cannot drift from it. Each run is trained
once: a process that asks for a run the other is training waits on the run's lock and then reuses it
(`ticketlab.runs`). The numbers in the notebook are the same as if it had trained everything itself; only the wall
time differs.

    TICKETLAB_HOME=<store> OMP_NUM_THREADS=1 python papers/results/edge_popup_worker.py [smoke|cpu|paper]
"""
import sys, time
from pathlib import Path

preset = sys.argv[1] if len(sys.argv) > 1 else 'cpu'
from ticketlab.papers import notebook_namespace
ns = notebook_namespace(Path(__file__).parents[1]/'edge_popup.ipynb', ['PRESETS = {', 'hp = supermask_train_hparams('], preset)   # its preset and data cells
P, hp, data, store = ns['P'], ns['hp'], ns['data'], ns['store']
from ticketlab.edgepopup import SupermaskHparams, supermask_points, supermask_sweep, fixed_size_points, lottery_sweep

S = SupermaskHparams
jobs = [  # (figure, points, replicates), as the notebook's cells build them, in the notebook's order
    ('Figure 3', supermask_points(P['models'], [P['width']], [S(density=k, weight_init=P['fig3_init']) for k in P['densities']]), P['replicates']),
    ('Figure 4', supermask_points([P['wide_model']], P['widths'], [S(density=P['wide_density'], weight_init=P['fig3_init'])]), P['replicates']),
    ('Figure 6', supermask_points([P['compare_model']], [P['width']], [S(method=m, density=0.5, weight_init=w) for w in P['methods_inits']
                                                                    for m in ('edge_popup', 'bernoulli')]), P['compare_replicates']),
    ('Figure 7', supermask_points([P['compare_model']], [P['width']], [S(density=0.5, weight_init=w) for w in P['inits']], dense=False),
     P['compare_replicates']),
    ('Figure 5', fixed_size_points(P['fixed_model'], P['fixed_widths'], P['fixed_base_width'], P['fixed_base_ks'], data[0],
                                   S(weight_init=P['fig3_init'])), P['replicates']),
    *([('Figure 11', supermask_points(['resnet18'], [P['resnet_width']], [S(density=k, weight_init=P['fig3_init']) for k in P['resnet_densities']]),
        P['replicates'])] if P['resnet_width'] is not None else []),
    ('App. C.2 supermasks', supermask_points([P['compare_model']], [P['width']], [S(density=0.5, weight_init=P['lottery_init'])], dense=False),
     P['compare_replicates'])]
LOTTERY = 'App. C.2 supermasks'   # the job whose supermasks' subnetworks App. C.2 then trains (`lottery_sweep`, not sweep points)
t0 = time.time()
for fig, points, reps in reversed(jobs):
    for pt in reversed(points):
        rows = supermask_sweep(hp, [pt], reps, store, data=data)
        if fig == LOTTERY:
            for r in reversed(range(reps)):
                lottery_sweep(rows[rows.replicate == r], store, data=data)
                print(f'[{time.time() - t0:6.0f} s] App. C.2: the found and a random subnetwork of replicate {r} trained', flush=True)
        print(f'[{time.time() - t0:6.0f} s] {fig}: {pt[0]} x{pt[1]:g} {"learned dense" if pt[2] is None else f"{pt[2].method}, k={pt[2].density:g}, {pt[2].weight_init}"}', flush=True)
