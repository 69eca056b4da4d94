"""A non-editable install, used away from the checkout: the wheel (built from the sdist, as `pip install .` and PyPI
users get it) ships the replication notebooks and the `ticketlab` command, and `ticketlab replicate lmc --preset smoke`
runs from the installed copy with no data files.

The wheel is installed with `pip install --no-deps --target DIR` and run with `PYTHONPATH=DIR` from a scratch folder,
so that this venv's torch is reused (a fresh venv would download it) while the installed copy, not the checkout,
is what gets imported: the tests assert it."""
import importlib.util, json, os, shutil, subprocess, sys, zipfile, tarfile
from pathlib import Path
from types import SimpleNamespace
import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_FILES = ['setup.py', 'settings.ini', 'pyproject.toml', 'README.md', 'MANIFEST.in']
PAPERS = sorted(p.name for p in (ROOT/'papers').glob('*.ipynb'))

def _run(cmd, timeout, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert r.returncode == 0, f'{" ".join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}'
    return r

@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    "sdist and wheel of a copy of the tree (the wheel built from the sdist), the wheel installed into a scratch folder."
    missing = [m for m in ('build', 'setuptools', 'pip') if importlib.util.find_spec(m) is None]
    if missing: pytest.skip(f'building the wheel needs {", ".join(missing)}: pip install build "setuptools>=64" wheel '
                            '(all in the dev extra)')
    tmp = tmp_path_factory.mktemp('install')
    src = tmp/'src'; src.mkdir()
    for f in BUILD_FILES: shutil.copy2(ROOT/f, src/f)
    skip = shutil.ignore_patterns('__pycache__', '*.pyc', '.ipynb_checkpoints')
    for d in ('ticketlab', 'papers'): shutil.copytree(ROOT/d, src/d, ignore=skip)
    _run([sys.executable, '-m', 'build', '--no-isolation', '--outdir', str(tmp/'dist'), str(src)], 300, cwd=tmp)
    (whl,), (sdist,) = (tmp/'dist').glob('*.whl'), (tmp/'dist').glob('*.tar.gz')
    site = tmp/'site'
    _run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-index', '--no-compile', '--disable-pip-version-check',
          '--target', str(site), str(whl)], 300, cwd=tmp)
    elsewhere = tmp/'elsewhere'; elsewhere.mkdir()                  # not the checkout: cwd of everything run below
    env = {k: v for k, v in os.environ.items() if k not in ('TICKETLAB_PAPERS', 'PYTHONPATH')}
    env.update(PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE='1', OMP_NUM_THREADS='1', TICKETLAB_HOME=str(tmp/'home'))
    return SimpleNamespace(tmp=tmp, whl=whl, sdist=sdist, site=site, elsewhere=elsewhere, env=env)

def test_wheel_ships_the_notebooks_the_command_and_the_requirements(installed):
    assert PAPERS
    with zipfile.ZipFile(installed.whl) as z:
        names = set(z.namelist())
        for f in PAPERS + ['README.md']:
            assert z.read(f'ticketlab/paper_notebooks/{f}') == (ROOT/'papers'/f).read_bytes(), f
        dist = next(n.split('/')[0] for n in names if n.endswith('.dist-info/METADATA'))
        eps, meta = z.read(f'{dist}/entry_points.txt').decode(), z.read(f'{dist}/METADATA').decode()
    assert '[console_scripts]\nticketlab = ticketlab.cli:main' in eps, eps
    reqs = {l.split(':', 1)[1].strip() for l in meta.splitlines() if l.startswith('Requires-Dist:')}
    assert {'papermill>=2.4', 'ipykernel>=6'} <= reqs, reqs                 # `ticketlab replicate` works after a plain install
    assert {'Provides-Extra: dev', 'Provides-Extra: jupyter', 'Provides-Extra: cluster'} <= set(meta.splitlines())
    with tarfile.open(installed.sdist) as t:
        members = {m.split('/', 1)[1] for m in t.getnames() if '/' in m}
    assert {'settings.ini', 'MANIFEST.in', *(f'papers/{f}' for f in PAPERS)} <= members

def test_installed_copy_is_imported_and_finds_its_notebooks(installed):
    code = ('import json, ticketlab, ticketlab.papers as p; '
            'print(json.dumps([ticketlab.__file__, str(p.papers_dir()), p.paper_names()]))')
    r = _run([sys.executable, '-c', code], 120, cwd=installed.elsewhere, env=installed.env)
    file, pdir, names = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(file).resolve().is_relative_to(installed.site.resolve()), file
    assert Path(pdir) == (installed.site/'ticketlab'/'paper_notebooks').resolve()
    assert names == sorted(Path(f).stem for f in PAPERS if not f.startswith(('_', '.')))

def test_replicate_lmc_smoke_from_the_installed_command(installed):
    nbs = installed.site/'ticketlab'/'paper_notebooks'
    before, out = sorted(os.listdir(nbs)), installed.tmp/'out'
    r = _run([str(installed.site/'bin'/'ticketlab'), 'replicate', 'lmc', '--preset', 'smoke', '--out', str(out)], 900,
             cwd=installed.elsewhere, env=installed.env)
    assert 'lmc (smoke) ran in' in r.stdout, r.stdout
    nb = json.loads((out/'lmc.ipynb').read_text())
    pm = nb['metadata']['papermill']
    assert Path(pm['input_path']).resolve() == (nbs/'lmc.ipynb').resolve() and not pm.get('exception'), pm
    text = ''.join(''.join(o.get('text', '')) for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', []))
    assert 'preset: smoke' in text and not any(o.get('output_type') == 'error' for c in nb['cells'] for o in c.get('outputs', []))
    assert {'.csv', '.png'} <= {p.suffix for p in out.iterdir()}
    assert sorted(os.listdir(nbs)) == before and list(installed.elsewhere.iterdir()) == []   # nothing written in place or in cwd
