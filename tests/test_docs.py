"""The docs site: .ci/docs.py builds every page (library through nbdev, papers, claims ledger) into a
scratch folder, show_doc output makes it into the library pages, and the nbconvert fallback renders
papers and notes (outputs, hidden inputs, links, math) and empty sections."""
import importlib.util, re, subprocess, sys
from pathlib import Path
import nbformat as nbf
import pytest, yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT/'.ci'/'docs.py'

def _load_docs():
    spec = importlib.util.spec_from_file_location('ticketlab_ci_docs', SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod          # dataclasses look their module up while the module runs
    spec.loader.exec_module(mod)
    return mod

docs = _load_docs()

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "Build the real site once, into a scratch folder (never the repo's _proc/ or _site/)."
    out = tmp_path_factory.mktemp('docs')
    generated = {f: (ROOT/'nbs'/f).exists() for f in docs.NBDEV_GENERATED}
    r = subprocess.run([sys.executable, str(SCRIPT), '--out', str(out)], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, f'docs build failed:\n{r.stdout}\n{r.stderr}'
    assert {f: (ROOT/'nbs'/f).exists() for f in docs.NBDEV_GENERATED} == generated, 'the build wrote into nbs/'
    return out, r.stdout

def _library_notebooks():
    return sorted(p.name for p in (ROOT/'nbs').glob('[0-9]*.ipynb'))

def test_build_summary(site):
    out, stdout = site
    lines = stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('docs: ') and str(out/'_site') in lines[0], stdout

def test_proc_assembled(site):
    out, _ = site
    proc = out/'_proc'
    assert (proc/'_quarto.yml').read_text() == (ROOT/'_quarto.yml').read_text()   # ours, not nbdev's
    q = yaml.safe_load((proc/'_quarto.yml').read_text())
    assert q['project']['type'] == 'website' and q['execute']['enabled'] is False
    assert q['format']['html']['theme'] == 'cosmo'
    assert set(q['metadata-files']) == {'nbdev.yml', 'sidebar.yml'}
    assert yaml.safe_load((proc/'nbdev.yml').read_text())['website']['title'] == 'ticketlab'
    contents = yaml.safe_load((proc/'sidebar.yml').read_text())['website']['sidebar']['contents']
    assert contents[0] == 'index.ipynb'
    sections = {c.get('section') or c.get('text'): c for c in contents[1:]}
    assert list(sections) == ['Library', 'Papers', 'Claims ledger']
    assert sections['Library']['contents'] == _library_notebooks()     # notebook order
    assert sections['Papers']['href'] == 'papers/index.md' and (proc/'papers'/'index.md').exists()
    assert sections['Claims ledger']['href'] == 'ticket_notes/index.md'
    for p in (ROOT/'papers').glob('*.ipynb'): assert (proc/'papers'/p.name).exists()
    for p in (ROOT/'ticket_notes').glob('*.md'): assert (proc/'ticket_notes'/p.name).exists()

def _page(out, name):
    f = out/'_site'/name
    assert f.exists(), f'{name} was not rendered'
    return f.read_text()

@pytest.mark.parametrize('page,names', [('core.html', ['Step', 'derive_seed', 'Hparams', 'atomic_write']),
                                        ('store.html', ['train_run', 'Store', 'Run'])])
def test_show_doc_made_it(site, page, names):
    "Exported names get a show_doc heading with the id nbdev's doc links point at (core.html#step)."
    html = _page(site[0], page)
    for n in names:
        assert re.search(rf'<h3 id="{n.lower()}"[^>]*>{n}<', html), f'no show_doc section for {n} in {page}'
    assert '>source</a>' in html                      # the source link, not the literal {target=...}

def test_every_library_page(site):
    out, _ = site
    index = _page(out, 'index.html')
    for nb in _library_notebooks():
        fm, _ = docs.nb_meta(nbf.read(out/'_proc'/nb, as_version=4))
        html = _page(out, fm['output-file'])
        assert f'href="{fm["output-file"]}"' in index, f'index.html does not link to {nb}'
        for bad in ('#| ', '{target=', 'show_doc(', ':::'):
            assert bad not in html, f'{fm["output-file"]} shows raw {bad!r}'
        assert '<header><h1>' in html and 'mathjax' in html.lower()
    for p in ('papers/index.html', 'ticket_notes/index.html'): _page(out, p)
    assert 'ticketlab.github.io' not in index      # nbdev's absolute doc links point into this site

# -- the fallback renderer on papers and notes (no nbdev, no subprocess) ------------------------------

def _paper(path):
    nb = nbf.v4.new_notebook()
    png = ('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==')
    nb.cells = [
        nbf.v4.new_markdown_cell('# Linear mode connectivity\n\n> Instability analysis.'),
        nbf.v4.new_code_cell("preset = 'smoke'", metadata={'tags': ['parameters']}),
        nbf.v4.new_markdown_cell('The barrier $\\mathcal{E}_{\\sup}$; see [`Step`](https://ticketlab.github.io/ticketlab/core.html#step)'
                                 ' and [the claim](../ticket_notes/claim.md).'),
        nbf.v4.new_code_cell("print('preset cpu')", outputs=[nbf.v4.new_output('stream', name='stdout', text='preset cpu\n')]),
        nbf.v4.new_code_cell('#| echo: false\nsecret_plotting_code()',
                             outputs=[nbf.v4.new_output('display_data', data={'image/png': png, 'text/plain': 'fig'})]),
        nbf.v4.new_code_cell('#| include: false\nnever_shown()'),
    ]
    nbf.write(nb, path)

def test_fallback_papers_and_notes(tmp_path):
    proc = tmp_path/'_proc'
    (proc/'papers').mkdir(parents=True); (proc/'ticket_notes').mkdir()
    _paper(proc/'papers'/'lmc.ipynb')
    (proc/'ticket_notes'/'claim.md').write_text(
        '---\ntitle: "Stability arrives early"\nstatus: reproduced\n---\n\n**Claim.** $k > 0$ suffices.\n\n'
        '::: {.callout-note}\nFrom [the paper](../papers/lmc.ipynb).\n:::\n')
    (proc/'index.md').write_text('---\ntitle: home\n---\n\nHello.\n')
    home = docs.Page('home', 'index.md', 'index.html', 'home')
    paper = docs.page_for(proc, proc/'papers'/'lmc.ipynb', 'papers')
    note = docs.page_for(proc, proc/'ticket_notes'/'claim.md', 'notes')
    assert (paper.title, paper.description, paper.href) == ('Linear mode connectivity', 'Instability analysis.', 'papers/lmc.html')
    assert (note.title, note.href) == ('Stability arrives early', 'ticket_notes/claim.html')
    (proc/'papers'/'index.md').write_text(docs.landing_md('papers', [paper], 'papers', {}))
    (proc/'ticket_notes'/'index.md').write_text(docs.landing_md('notes', [], 'ticket_notes', {}))   # empty section
    pages = [home, docs.page_for(proc, proc/'papers'/'index.md', 'papers'), paper,
             docs.page_for(proc, proc/'ticket_notes'/'index.md', 'notes'), note]
    cfg = {'title': 'ticketlab', 'lib_name': 'ticketlab', 'doc_host': 'https://ticketlab.github.io', 'doc_baseurl': '/ticketlab'}
    assert docs.render_fallback(tmp_path, pages, cfg) == []
    site = tmp_path/'_site'
    p = (site/'papers'/'lmc.html').read_text()
    assert 'preset cpu' in p and 'data:image/png;base64' in p                 # committed outputs shown
    assert 'secret_plotting_code' not in p and 'never_shown' not in p         # echo: false, include: false
    assert '#|' not in p and '$\\mathcal{E}_{\\sup}$' in p                    # options gone, math left to MathJax
    assert 'href="../core.html#step"' in p and 'href="../ticket_notes/claim.html"' in p
    n = (site/'ticket_notes'/'claim.html').read_text()
    assert '<div class="callout-note">' in n and 'href="../papers/lmc.html"' in n and ':::' not in n
    assert 'No claim notes yet' in (site/'ticket_notes'/'index.html').read_text()
    assert 'href="lmc.ipynb"' not in (site/'papers'/'index.html').read_text()
    assert 'href="lmc.html"' in (site/'papers'/'index.html').read_text()

def test_fallback_fails_loudly_on_empty_page(tmp_path):
    proc = tmp_path/'_proc'; proc.mkdir()
    nbf.write(nbf.v4.new_notebook(cells=[nbf.v4.new_code_cell('#| include: false\nx = 1')]), proc/'empty.ipynb')
    errors = docs.render_fallback(tmp_path, [docs.Page('library', 'empty.ipynb', 'empty.html', '')],
                                  {'title': 't', 'lib_name': 't'})
    assert errors and 'empty.ipynb' in errors[0] and 'empty' in errors[0]
