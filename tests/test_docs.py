"""The docs site: .ci/docs.py builds every page (library through nbdev, papers, claims ledger) into a
scratch folder, show_doc output makes it into the library pages, and the nbconvert fallback renders
papers and notes (outputs, hidden inputs, links, math) and empty sections. Every page with TeX loads a math
renderer and keeps its TeX verbatim; every page is titled by its source's own title."""
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
                                        ('store.html', ['Store', 'Run']), ('runs.html', ['train_run', 'RunSpec', 'dense_run'])])
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

# -- math: every page with TeX loads a renderer and keeps its TeX intact --------------------------------

def _site_pages(out):
    "(source in _proc, rendered page text, Page) for every page of the built site."
    proc = out/'_proc'
    srcs = [(f, 'library') for f in sorted(proc.glob('*.ipynb'))]
    srcs += [(f, 'papers') for f in sorted((proc/'papers').glob('*.ipynb'))]
    srcs += [(f, 'notes') for f in sorted((proc/'ticket_notes').glob('*.md')) if f.stem != 'index']
    for f, section in srcs:
        p = docs.page_for(proc, f, section)
        yield f, _page(out, p.href), p

def test_math_renders_on_every_page(site):
    out, _ = site
    with_math = {}
    for src, html, p in _site_pages(out):
        spans = docs.source_tex(src)
        assert docs.math_problems(html, spans) == [], f'{p.href}: {docs.math_problems(html, spans)}'
        if spans:
            with_math[p.href] = html
            assert re.search(r'<script\b[^>]*src="[^"]*mathjax@3[^"]*tex-chtml', html), f'{p.href} loads no MathJax'
            assert 'class="math-notice"' in html            # what a reader offline is told
    assert {'lmc.html', 'imp.html', 'evaluate.html', 'telemetry.html', 'papers/lmc.html'} <= set(with_math)   # not vacuous
    ev, imp = with_math['evaluate.html'], with_math['imp.html']
    assert r'$\mu(\alpha) = (1-\alpha)\mu_1 + \alpha\mu_2$' in ev        # BN statistics along the path
    assert r'\mathcal{A}_0(\mathbf{m}^{(L)}\odot\mathbf{w}^{(L-1)},T)$' in imp        # the IMP-LRR formula
    assert r'$$d_\ell = \prod_{j=1}^{\ell} (1 - p_j)$$' in imp and r'+ \varepsilon$' in imp

def test_math_survives_markdown(tmp_path):
    "Underscores, stars, backslashes and braces inside $..$ and $$..$$ reach the page as TeX, in notebooks and notes."
    tex = [r'$\mu(\alpha)$', r'$w^{(L)} = A_0(m^{(L)} \odot w^{(L-1)}, T)$', r'$a_1 * b_1 * c_1$', r'$\{0, 1\}^d$',
           r'$\varepsilon_{\text{train}}$', '$$\n\\max_{\\alpha} \\mathcal{L}_{\\text{train}}(w_\\alpha) \\le \\varepsilon_1 < 2\n$$']
    md = 'Text with ' + ' and '.join(tex[:-1]) + ', then display math:\n\n' + tex[-1] + '\n\nCosts $5 and $10 (not math).\n'
    proc = tmp_path/'_proc'; proc.mkdir()
    nbf.write(nbf.v4.new_notebook(cells=[nbf.v4.new_markdown_cell('# Math page\n\n' + md)]), proc/'m.ipynb')
    (proc/'n.md').write_text('---\ntitle: Note\n---\n\n' + md)
    pages = [docs.page_for(proc, proc/'m.ipynb', 'library'), docs.page_for(proc, proc/'n.md', 'notes')]
    assert docs.render_fallback(tmp_path, pages, {'title': 't', 'lib_name': 't'}) == []
    for p in pages:
        html = (tmp_path/'_site'/p.href).read_text()
        assert docs.source_tex(proc/p.src) == tex
        for t in tex: assert t.replace('<', '&lt;') in html, f'{p.href}: {t!r} not intact'
        assert docs.math_problems(html, tex) == []

def test_math_check_fails_without_renderer(tmp_path, monkeypatch):
    "The checker itself: a page with math and no renderer, mangled math, lost TeX; the build reports them."
    proc = tmp_path/'_proc'; proc.mkdir()
    (proc/'n.md').write_text('---\ntitle: Note\n---\n\nThe barrier $\\mathcal{E}_{\\sup}(w_1, w_2)$.\n')
    page = docs.page_for(proc, proc/'n.md', 'notes')
    assert docs.render_fallback(tmp_path, [page], {'title': 't', 'lib_name': 't'}) == []
    html = (tmp_path/'_site'/'n.html').read_text()
    spans = docs.source_tex(proc/'n.md')
    assert spans == ['$\\mathcal{E}_{\\sup}(w_1, w_2)$'] and docs.math_problems(html, spans) == []
    stripped = re.sub(r'<script\b[^>]*\bsrc="[^"]*"[^>]*>\s*</script>', '', html)
    assert stripped != html
    (problem,) = docs.math_problems(stripped, spans)
    assert 'no math renderer' in problem and 'mathcal' in problem
    assert docs.math_problems(stripped) != []                 # found in the HTML alone, without the source
    # no math, no renderer: fine; dollars that are not math are not math
    assert docs.math_problems('<p>Costs $5 and $10; <code>$HOME</code> and <pre>echo $PATH $x$</pre></p>') == []
    # markdown without the math plugin mangles TeX: <em> inside $..$, backslashes lost
    import mistune
    src = r'Math $x*y*z$ and $\{0, 1\}$.'
    bad = mistune.html(src) + docs.math_head(docs.MathRenderer(), '')
    probs = docs.math_problems(bad, docs.tex_spans(src))
    assert any('mangled' in p and '<em>' in p for p in probs) and any('not intact' in p and r'\{0, 1\}' in p for p in probs)
    # the build fails on a page whose renderer is gone
    monkeypatch.setattr(docs, 'math_head', lambda math, up: '')
    errors = docs.render_fallback(tmp_path, [page], {'title': 't', 'lib_name': 't'})
    assert len(errors) == 1 and errors[0].startswith('n.md: ') and 'no math renderer' in errors[0]

def _fake_katex(d):
    for f in ('katex.min.js', 'katex.min.css', 'contrib/auto-render.min.js', 'fonts/KaTeX_Main-Regular.woff2'):
        (d/f).parent.mkdir(parents=True, exist_ok=True); (d/f).write_text(f'/* {f} */')
    return d

def test_katex_copied_for_offline_pages(tmp_path):
    proc = tmp_path/'_proc'; (proc/'ticket_notes').mkdir(parents=True)
    (proc/'ticket_notes'/'n.md').write_text('# A claim\n\nStable at $k \\ge 0$.\n')
    page = docs.page_for(proc, proc/'ticket_notes'/'n.md', 'notes')
    math = docs.MathRenderer(katex=_fake_katex(tmp_path/'katex'))
    assert docs.render_fallback(tmp_path, [page], {'title': 't', 'lib_name': 't'}, math) == []
    site = tmp_path/'_site'
    for f in ('katex.min.js', 'katex.min.css', 'auto-render.js', 'fonts/KaTeX_Main-Regular.woff2'):
        assert (site/'_katex'/f).is_file(), f
    html = (site/'ticket_notes'/'n.html').read_text()
    assert 'src="../_katex/katex.min.js"' in html and 'href="../_katex/katex.min.css"' in html
    assert 'renderMathInElement' in html and 'mathjax' not in html.lower() and '$k \\ge 0$' in html
    assert docs.math_problems(html, ['$k \\ge 0$']) == []
    (tmp_path/'empty').mkdir()
    with pytest.raises(docs.DocsError, match='katex.min.js.*fonts/'): docs.copy_katex(tmp_path/'empty', site)

# -- titles: each page is titled by its source's own title ---------------------------------------------

def _first_h1(md):
    return docs._h1_title(md)[0]

def _titles(html, href):
    "(<title>, the page's h1 text, the sidebar entry's text) of a rendered page."
    unescape = __import__('html').unescape
    title = unescape(re.search(r'<title>(.*?)</title>', html, re.S)[1])
    h1 = re.search(r'<h1\b[^>]*>(.*?)</h1>', re.sub(r'<a class="anchor-link".*?</a>', '', html), re.S)[1]
    side = re.search(r'<nav class="sidebar".*?</nav>', html, re.S)[0]
    up = '../' * href.count('/')
    entry = re.search(rf'<a href="{re.escape(up + href)}"[^>]*>(.*?)</a>', side)
    return title, unescape(re.sub(r'<[^>]+>', '', h1)).strip(), unescape(entry[1]) if entry else None

def test_titles_are_the_sources_titles(site):
    out, _ = site
    checked = 0
    for nb in sorted((ROOT/'nbs').glob('*.ipynb')) + sorted((ROOT/'papers').glob('*.ipynb')):
        src = next(c.source for c in nbf.read(nb, as_version=4).cells if c.cell_type == 'markdown' and c.source.strip())
        want = _first_h1(src)
        assert want, f'{nb.name} has no `# Title` markdown cell'
        href = ('papers/' if nb.parent.name == 'papers' else '') + re.sub(r'^\d+[a-z]?_', '', nb.stem) + '.html'   # 01a_loader -> loader
        title, h1, entry = _titles(_page(out, href), href)
        assert h1 == want, f'{href}: h1 {h1!r}, the notebook says {want!r}'
        if href == 'index.html': assert (title, entry) == (want, 'Home')
        else: assert (title, entry) == (f'{want} – ticketlab', want), href
        checked += 1
    for note in sorted((ROOT/'ticket_notes').glob('*.md')):
        fm, has_h1 = docs.md_meta(note.read_text())
        if not fm.get('title'): continue                # a note with neither title: nor `# heading`: its file name
        href = f'ticket_notes/{note.stem}.html'
        assert _titles(_page(out, href), href) == (f'{fm["title"]} – ticketlab', fm['title'], fm['title']), href
        checked += 1
    assert checked >= len(_library_notebooks()) + 2
