r"""Build the docs site: the library (nbs/), the papers (papers/) and the claims ledger (ticket_notes/).

python .ci/docs.py                # assemble _proc/ and render _site/ in the repo root
python .ci/docs.py --out DIR      # ... into DIR/_proc and DIR/_site instead (tests use this)
python .ci/docs.py --quarto       # render _proc with `quarto render` when quarto is on PATH

Assembly (_proc/, what Quarto renders): the notebooks of nbs/ processed by nbdev (show_doc cells
added and run, directives applied, frontmatter from the `# title` / `> summary` cells), papers/*.ipynb
and ticket_notes/*.md copied as they are (papers carry their committed outputs and are never
executed), the top-level _quarto.yml, nbdev.yml (site metadata from settings.ini), sidebar.yml (every
page in order) and a landing page for each of papers/ and ticket_notes/.

Rendering: with --quarto and quarto on PATH, `quarto render _proc` (output moved to _site/).
Otherwise (Quarto is not installed everywhere) every page is rendered with nbconvert (notebooks, no
execution) and nbconvert's mistune markdown (notes) into standalone HTML pages that share a sidebar
of all pages; _site/index.html is the library's index page. Either way every page must exist and
have content, or the script exits non-zero naming the pages that failed.

Titles: a page's <title>, its h1 and its sidebar entry are the source's own title: the `title:` of its
frontmatter, else its first `# heading` (a notebook's `# Title` cell, which nbdev turns into the title
of the library pages), else its file name.

Math: TeX in markdown ($..$, $$..$$, \(..\), \[..\], \begin{env}..\end{env}) is left as it is by
nbconvert's markdown (its math plugin takes math out before markdown, so `_`, `*` and `\` inside math
stay TeX) and typeset in the browser, as Quarto does (html-math-method: mathjax in _quarto.yml):
python .ci/docs.py                       # MathJax 3 from the CDN Quarto uses (MATHJAX_URL): needs a network
python .ci/docs.py --mathjax-url URL     # ... another MathJax 3 component (a local tex-chtml-full.js)
python .ci/docs.py --katex DIR           # KaTeX copied from DIR into _site/_katex: renders math offline
DIR is KaTeX's browser build: `apt-get install libjs-katex` puts it in /usr/share/javascript/katex, and
`npm install katex` in node_modules/katex/dist (about 2 MB, fonts included; nothing is vendored in the
repo). Debian's libjs-mathjax is MathJax 2, whose configuration differs: not for --mathjax-url.
Without a network the default MathJax does not load; pages with math then show a notice saying so
above their TeX source. Every rendered page is checked (math_problems): a page with math must load a
renderer, no math may be mangled by markdown (<em> inside $..$), and every TeX span of the source
(its markdown cells and show_doc output) must appear verbatim in the HTML, or the build fails.
"""
from __future__ import annotations
import argparse, html, os, posixpath, re, shutil, subprocess, sys, time, warnings
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {'home': 'Home', 'library': 'Library', 'papers': 'Papers', 'notes': 'Claims ledger'}
# files nbdev's own tools (nbdev_proc_nbs, nbdev_preview) generate in nbs/: never part of our site
NBDEV_GENERATED = {'_quarto.yml', 'nbdev.yml', 'sidebar.yml'}
ASSET_SUFFIXES = {'.png', '.jpg', '.jpeg', '.gif', '.svg', '.webp', '.pdf', '.csv', '.css'}

class DocsError(Exception): pass

@dataclass
class Page:
    section: str        # a key of SECTIONS
    src: str            # path inside _proc (posix)
    href: str           # path of the rendered page inside _site (posix)
    title: str
    description: str = ''

# ---------------------------------------------------------------------------------------------
# Assembly
# ---------------------------------------------------------------------------------------------

# The nbdev worker runs in spawned processes. It is pickled by reference to this module under a fixed
# name, because execnb's IPython shell replaces each worker's __main__ after its first notebook.
_WORKER_MOD = '_ticketlab_docs'
sys.modules.setdefault(_WORKER_MOD, sys.modules[__name__])

def _proc_one(task):
    "nbdev's processing of one notebook (nbdev.serve_drv.main, as nbdev_proc_nbs runs it): its warnings."
    import nbdev.serve_drv
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        try: nbdev.serve_drv.main(task)
        except Exception as e:      # keep the cause (e.g. the NameError), which does not cross processes
            c = e.__cause__
            raise RuntimeError(f'{e}' + (f'\n  -> {type(c).__name__}: {c}' if c else '')) from None
    return sorted({str(w.message).strip() for w in caught})
_proc_one.__module__ = _WORKER_MOD

EXEC_HINT = ("  (to build docs nbdev runs every cell that exports, imports or calls show_doc, and only those: a cell "
             "that imports AND uses names from other cells fails; move its import to the notebook's imports cell)")

def proc_library(proc: Path, n_workers: int, verbose=False) -> tuple[list[Path], list[str]]:
    "nbdev processing of nbs/ into `proc` (nbdev_proc_nbs with a chosen output folder): (notebooks, errors)."
    from nbdev.config import get_config
    from nbdev.doclinks import nbglob
    from nbdev.serve import _proc_file
    cfg = get_config()
    nbs = cfg.nbs_path
    files = [f for f in nbglob(nbs, func=Path, file_glob='', file_re='')
             if f.name not in NBDEV_GENERATED and f.suffix != '.py']
    tasks = [t for t in (_proc_file(f, cache=proc, path=nbs) for f in files) if t]
    if not tasks: return [], [f'no notebooks found in {nbs}']
    done, errors = [], []
    with ProcessPoolExecutor(max(1, min(n_workers, len(tasks))), mp_context=mp.get_context('spawn')) as ex:
        futs = {ex.submit(_proc_one, t): t for t in tasks}
        for fut, (src, dst, _) in futs.items():
            src = src.relative_to(cfg.config_path)
            try:
                for w in fut.result():
                    if verbose: print(f'docs: {src}: warning: {w}', file=sys.stderr)
                done.append(dst)
            except Exception as e:
                errors.append(f'{src}: nbdev processing failed: {e}' + ('\n' + EXEC_HINT if 'Error in notebook' in str(e) else ''))
                dst.unlink(missing_ok=True)
    return sorted(d for d in done if d.suffix == '.ipynb'), errors

def _site_yml(cfg) -> str:
    import yaml
    site = {'title': cfg.get('title', cfg.lib_name), 'description': cfg.get('description', ''),
            'site-url': cfg.get('doc_host', '') + cfg.get('doc_baseurl', ''),
            'repo-url': cfg.get('git_url', ''), 'repo-branch': cfg.get('branch', 'main')}
    return ('# generated by .ci/docs.py from settings.ini\n'
            + yaml.safe_dump({'website': site}, sort_keys=False, allow_unicode=True))

def _copy_section(src_dir: Path, dst_dir: Path, pattern: str) -> list[Path]:
    "Copy the pages matching `pattern` (and image/data assets) from `src_dir` to `dst_dir`."
    dst_dir.mkdir(parents=True, exist_ok=True)
    if not src_dir.is_dir(): return []
    pages = []
    for f in sorted(src_dir.rglob('*')):
        rel = f.relative_to(src_dir)
        if not f.is_file() or any(p.startswith(('.', '_')) for p in rel.parts): continue
        if len(rel.parts) == 1 and f.match(pattern): pages.append(dst_dir/rel)
        elif f.suffix.lower() not in ASSET_SUFFIXES: continue
        (dst_dir/rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, dst_dir/rel)
    return pages

# ---------------------------------------------------------------------------------------------
# Page metadata (titles, descriptions, output names)
# ---------------------------------------------------------------------------------------------

_re_fm = re.compile(r'\A\s*---\s*\n(.*?)\n---\s*(?:\n|\Z)', re.S)

def _yaml_fm(text: str) -> tuple[dict, str]:
    "Split YAML frontmatter from markdown `text`: (metadata, rest)."
    import yaml
    m = _re_fm.match(text)
    if not m: return {}, text
    try: d = yaml.safe_load(m[1]) or {}
    except yaml.YAMLError: return {}, text
    return (d, text[m.end():]) if isinstance(d, dict) else ({}, text)

def _h1_title(md: str) -> tuple[str, str]:
    "Title and `> summary` from a markdown `# heading` (nbdev style), if it has one."
    m = re.search(r'^#\s+(.+?)\s*#*\s*$', md, re.M)
    if not m: return '', ''
    s = re.match(r'\s*>\s*(.+)', md[m.end():].lstrip('\n'))
    return m[1].strip(), (s[1].strip() if s else '')

def nb_meta(nb) -> tuple[dict, bool]:
    "(frontmatter, has_h1): frontmatter from a raw `---` cell, the title else from the first `# heading`."
    fm = next((d for c in nb.cells if c.cell_type == 'raw' and c.source.lstrip().startswith('---')
               for d in [_yaml_fm(c.source)[0]] if d), {})
    if fm.get('title'): return fm, False
    md = next((c.source for c in nb.cells if c.cell_type == 'markdown' and c.source.strip()), '')
    t, d = _h1_title(md)
    return ({**fm, 'title': t, 'description': fm.get('description') or d}, True) if t else (fm, False)

def md_meta(text: str) -> tuple[dict, bool]:
    fm, rest = _yaml_fm(text)
    if fm.get('title'): return fm, False
    t, d = _h1_title(rest)
    return {**fm, 'title': t, 'description': fm.get('description') or d} if t else fm, bool(t)

def _title_from_name(stem: str) -> str:
    return re.sub(r'^\d+[_-]', '', stem).replace('_', ' ').replace('-', ' ').strip() or stem

def page_for(proc: Path, path: Path, section: str) -> Page:
    import nbformat
    src = path.relative_to(proc).as_posix()
    if path.suffix == '.ipynb': fm, _ = nb_meta(nbformat.read(path, as_version=4))
    else: fm, _ = md_meta(path.read_text(encoding='utf-8'))
    out = fm.get('output-file') or path.with_suffix('.html').name
    return Page(section, src, posixpath.join(posixpath.dirname(src), out),
                str(fm.get('title') or _title_from_name(path.stem)), str(fm.get('description') or ''))

# ---------------------------------------------------------------------------------------------
# Landing pages and sidebar (shared by Quarto and the fallback renderer)
# ---------------------------------------------------------------------------------------------

LANDING = {
    'papers': ('Papers', 'One parameterized replication notebook per paper, shown with the outputs of its '
               'latest real run (preset, hardware and date are printed at the top of each).',
               'No paper notebooks yet: they go in `papers/`.'),
    'notes': ('Claims ledger', "One note per claim of a paper: the claim, the paper's figure, our result "
              'and its status.', 'No claim notes yet: they go in `ticket_notes/`.'),
}

def _fm_block(d: dict) -> str:
    import yaml
    return '---\n' + yaml.safe_dump(d, sort_keys=False, allow_unicode=True, width=10**6) + '---\n\n'

def landing_md(section: str, pages: list[Page], folder: str, status: dict) -> str:
    title, desc, empty = LANDING[section]
    lines = [_fm_block({'title': title, 'description': desc})]
    if not pages: lines.append(empty)
    for p in pages:
        link = posixpath.relpath(p.src, folder)
        text = re.sub(r'([\[\]])', r'\\\1', p.title)
        st = f' **[{status[p.src]}]**' if status.get(p.src) else ''
        lines.append(f'- [{text}]({link}){st}' + (f': {p.description}' if p.description else ''))
    return '\n'.join(lines) + '\n'

def sidebar_yml(pages: list[Page]) -> str:
    import yaml
    by = {s: [p for p in pages if p.section == s] for s in SECTIONS}
    contents = [p.src for p in by['home']]
    contents.append({'section': SECTIONS['library'], 'contents': [p.src for p in by['library']]})
    for s in ('papers', 'notes'):
        landing, rest = by[s][0], by[s][1:]
        contents.append({'section': SECTIONS[s], 'href': landing.src, 'contents': [p.src for p in rest]}
                        if rest else {'text': SECTIONS[s], 'href': landing.src})
    return ('# generated by .ci/docs.py: every page of the site, in order\n'
            + yaml.safe_dump({'website': {'sidebar': {'contents': contents}}}, sort_keys=False))

def assemble(out: Path, n_workers: int, verbose=False) -> tuple[list[Page], list[str]]:
    "Build `out/_proc`: (the site's pages in sidebar order: home, library, papers, notes; errors)."
    from nbdev.config import get_config
    cfg = get_config()
    proc = out/'_proc'
    if proc.exists(): shutil.rmtree(proc)
    proc.mkdir(parents=True)
    qy = cfg.config_path/'_quarto.yml'
    if not qy.exists(): raise DocsError(f'{qy} is missing')
    nbs, errors = proc_library(proc, n_workers, verbose)
    shutil.copy2(qy, proc/'_quarto.yml')          # ours, never nbdev's generated nbs/_quarto.yml
    (proc/'nbdev.yml').write_text(_site_yml(cfg))
    lib = [page_for(proc, f, 'library') for f in nbs]
    pages = [p for p in lib if p.src == 'index.ipynb'] or [Page('home', 'index.md', 'index.html', cfg.lib_name)]
    pages[0].section = 'home'
    if pages[0].src == 'index.md':
        (proc/'index.md').write_text(_fm_block({'title': cfg.lib_name}) + cfg.get('description', '') + '\n')
    pages += [p for p in lib if p.src != 'index.ipynb']
    for section, folder, pattern in (('papers', 'papers', '*.ipynb'), ('notes', 'ticket_notes', '*.md')):
        found = _copy_section(cfg.config_path/folder, proc/folder, pattern)
        sec = [page_for(proc, f, section) for f in found if f.stem != 'index']
        status = {p.src: md_meta((proc/p.src).read_text(encoding='utf-8'))[0].get('status')
                  for p in sec if p.src.endswith('.md')}
        own_index = proc/folder/('index' + pattern[1:])
        if not own_index.exists():
            own_index = proc/folder/'index.md'
            own_index.write_text(landing_md(section, sec, folder, status))
        pages += [page_for(proc, own_index, section)] + sec
    dup = {p.href for p in pages if sum(q.href == p.href for q in pages) > 1}
    if dup: raise DocsError(f'several pages render to {sorted(dup)}: rename one (or its output-file)')
    (proc/'sidebar.yml').write_text(sidebar_yml(pages))
    return pages, errors

# ---------------------------------------------------------------------------------------------
# Fallback renderer: nbconvert + mistune, one standalone page per notebook / note
# ---------------------------------------------------------------------------------------------

_re_opt = re.compile(r'^\s*#\|\s*([\w-]+)\s*(?::\s*(.*?))?\s*$')
_re_link_attrs = re.compile(r'\[([^\]\n]*)\]\(([^)\s]+)\)\{([^}\n]*)\}')
_re_fdiv = re.compile(r'^\s*:{3,}\s*(?:\{([^}]*)\}|([\w-]+))?\s*$', re.M)

def _pandoc_attrs(s: str) -> str:
    "Pandoc attributes `{.cls #id key=\"v\"}` as HTML attributes."
    cls, out = [], []
    for tok in re.findall(r'[.#][\w-]+|[\w-]+=(?:"[^"]*"|\'[^\']*\'|\S+)', s):
        if tok[0] == '.': cls.append(tok[1:])
        elif tok[0] == '#': out.append(f'id="{tok[1:]}"')
        else:
            k, v = tok.split('=', 1)
            out.append(f'{k}="{html.escape(v.strip(chr(34) + chr(39)))}"')
    if cls: out.insert(0, f'class="{" ".join(cls)}"')
    return ' '.join(out)

def quarto_md(md: str) -> str:
    "Turn the Quarto/pandoc markdown extensions nbdev emits into HTML that mistune passes through."
    md = _re_link_attrs.sub(lambda m: f'<a href="{m[2]}" {_pandoc_attrs(m[3])}>{m[1]}</a>', md)
    def fdiv(m):
        if m[1] is None and m[2] is None: return '\n</div>\n'
        attrs = _pandoc_attrs(m[1]) if m[1] is not None else f'class="{m[2]}"'
        return f'\n<div {attrs}>\n'
    return _re_fdiv.sub(fdiv, md)

def _cell_options(src: str) -> tuple[dict, str]:
    "Leading `#| key: value` options of a code cell, and the source without them."
    lines, opts = src.splitlines(), {}
    i = 0
    while i < len(lines) and (not lines[i].strip() or _re_opt.match(lines[i])):
        m = _re_opt.match(lines[i])
        if m: opts[m[1]] = (m[2] or '').strip().strip('"\'').lower() if m[2] is not None else True
        i += 1
    return opts, '\n'.join(lines[i:]).strip('\n')

def prepare_nb(nb):
    "Apply Quarto cell options and nbdev leftovers to `nb` (in place) for nbconvert."
    cells = []
    for c in nb.cells:
        if c.cell_type == 'raw':
            fmt = c.metadata.get('format') or c.metadata.get('raw_mimetype') or ''
            if fmt in ('text/html', 'text/markdown', 'html', 'markdown') and not c.source.lstrip().startswith('---'):
                c.cell_type = 'markdown'
            else: continue
        if c.cell_type == 'markdown':
            if not c.source.strip(): continue
            c.source = quarto_md(c.source)
        elif c.cell_type == 'code':
            opts, c.source = _cell_options(c.source)
            tags = set(c.metadata.get('tags', []))
            if opts.get('include') == 'false' or opts.get('hide') is True or opts.keys() & {'export', 'exporti', 'default_exp'} \
               or tags & {'remove-cell', 'remove_cell'}: continue
            if opts.get('echo') == 'false' or opts.get('hide_input') is True or tags & {'remove-input', 'remove_input', 'hide-input'}:
                c.metadata.setdefault('tags', []).append('remove-input')
            if opts.get('output') == 'false' or opts.get('hide_output') is True or tags & {'remove-output', 'remove_output'}:
                c.outputs = []
            for o in c.get('outputs', []):
                if 'data' in o and 'text/markdown' in o.data:
                    md = o.data['text/markdown']
                    o.data['text/markdown'] = quarto_md(''.join(md) if isinstance(md, list) else md)
            if not c.source.strip() and not c.get('outputs'): continue
            if not c.source.strip(): c.metadata.setdefault('tags', []).append('remove-input')
        cells.append(c)
    nb.cells = cells
    return nb

def _exporter():
    from nbconvert import HTMLExporter
    from traitlets.config import Config
    c = Config()
    c.HTMLExporter.template_name = 'basic'
    c.HTMLExporter.exclude_input_prompt = True
    c.HTMLExporter.exclude_output_prompt = True
    # no embed_images: nbconvert then re-parses each inline html tag alone and closes it (<a ...></a>text);
    # images referenced by relative path are copied into _site instead
    c.HTMLExporter.anchor_link_text = '#'
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {'remove-input'}
    return HTMLExporter(config=c)

def render_nb_body(path: Path, exporter=None) -> tuple[str, bool]:
    import nbformat
    nb = nbformat.read(path, as_version=4)
    _, has_h1 = nb_meta(nb)
    prepare_nb(nb)
    body, _ = (exporter or _exporter()).from_notebook_node(nb, resources={'metadata': {'path': str(path.parent)}})
    return body, has_h1

def render_md_body(path: Path) -> tuple[str, bool]:
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
    src = path.read_text(encoding='utf-8')
    (_, has_h1), (_, text) = md_meta(src), _yaml_fm(src)
    r = IPythonRenderer(escape=False, anchor_link_text='#', path=str(path.parent))
    return f'<div class="text_cell_render rendered_html">{MarkdownWithMath(renderer=r).render(quarto_md(text))}</div>', has_h1

def _slug(text: str) -> str:
    "Pandoc's auto identifier (what Quarto and nbdev's doc links use)."
    s = re.sub(r'[^\w\s.-]', '', html.unescape(re.sub(r'<[^>]+>', '', text)).strip().lower())
    s = re.sub(r'\s+', '-', s)
    return re.sub(r'^[^a-z]+', '', s) or 'section'

def fix_headings(body: str) -> tuple[str, list[tuple[int, str, str]]]:
    "Pandoc-style heading ids (nbdev links to `core.html#step`); returns the body and its h2/h3 toc."
    seen, toc = {}, []
    def sub(m):
        lvl, inner = m[1], m[3]
        text = re.sub(r'<a class="anchor-link".*?</a>', '', inner)
        base = _slug(text); n = seen.get(base, 0); seen[base] = n + 1
        ident = base if not n else f'{base}-{n}'
        if lvl in '23': toc.append((int(lvl), ident, re.sub(r'<[^>]+>', '', text).strip()))
        return f'<h{lvl} id="{ident}" class="anchored">{text}<a class="anchor-link" href="#{ident}">#</a></h{lvl}>'
    return re.sub(r'<h([1-6])(\s[^>]*)?>(.*?)</h\1>', sub, body, flags=re.S), toc

def fix_links(body: str, page: Page, pages: list[Page], site_url: str) -> str:
    "Point links at rendered pages: nbdev's absolute doc links, and links to .ipynb/.md sources."
    by_src = {p.src: p.href for p in pages}
    here = posixpath.dirname(page.href)
    src_dir = posixpath.dirname(page.src)
    def target(url):
        if site_url and url.startswith(site_url.rstrip('/') + '/'):
            return posixpath.relpath(url[len(site_url.rstrip('/')) + 1:] or 'index.html', here or '.')
        if re.match(r'^[a-z][\w+.-]*:|^[#/]', url): return url
        path, _, frag = url.partition('#')
        if not path.endswith(('.ipynb', '.md')): return url
        tgt = posixpath.normpath(posixpath.join(src_dir, path))
        if tgt.startswith('nbs/'): tgt = tgt[4:]
        href = by_src.get(tgt) or re.sub(r'\.(ipynb|md)$', '.html', tgt)
        return posixpath.relpath(href, here or '.') + (f'#{frag}' if frag else '')
    return re.sub(r'(<a\s[^>]*?href=")([^"]*)(")', lambda m: m[1] + html.escape(target(html.unescape(m[2]))) + m[3], body)

def _text(body: str) -> str:
    body = re.sub(r'<(script|style)\b.*?</\1>', ' ', body, flags=re.S)
    return html.unescape(re.sub(r'<[^>]+>', ' ', body)).strip()

def _sidebar(pages: list[Page], page: Page) -> str:
    up = '../' * page.href.count('/')
    def link(p, text=None):
        cur = ' class="active"' if p.href == page.href else ''
        return f'<a href="{up}{p.href}"{cur}>{html.escape(text or p.title)}</a>'
    out = ['<nav class="sidebar" aria-label="Site">']
    for s, name in SECTIONS.items():
        sec = [p for p in pages if p.section == s]
        if s == 'home':
            out += [f'<div class="sb-home">{link(p, "Home")}</div>' for p in sec]
            continue
        if not sec and s != 'library': continue      # a section without its landing page (tests)
        head = link(sec[0], name) if s != 'library' else html.escape(name)
        items = sec if s == 'library' else sec[1:]
        out.append(f'<div class="sb-section"><div class="sb-title">{head}</div><ul>')
        out += [f'<li>{link(p)}</li>' for p in items]
        if not items: out.append('<li class="sb-empty">none yet</li>')
        out.append('</ul></div>')
    out.append('</nav>')
    return '\n'.join(out)

CSS = """
:root { --primary: #2780e3; --fg: #343a40; --muted: #6c757d; --border: #dee2e6; --code-bg: #f8f9fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.6 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); }
a { color: var(--primary); text-decoration: none; } a:hover { text-decoration: underline; }
header.navbar { background: var(--primary); color: #fff; padding: .55rem 1.5rem; font-size: 1.25rem; position: sticky; top: 0; z-index: 10; }
header.navbar a { color: #fff; font-weight: 500; margin-right: 1.5rem; }
header.navbar a.sec { font-size: 1rem; opacity: .85; font-weight: 400; }
.layout { display: grid; grid-template-columns: 250px minmax(0, 1fr) 220px; gap: 2rem; max-width: 1400px; margin: 0 auto; padding: 0 1.5rem; }
nav.sidebar { position: sticky; top: 3.4rem; align-self: start; max-height: calc(100vh - 3.4rem); overflow-y: auto; padding: 1.5rem 0; font-size: .92rem; }
nav.sidebar ul { list-style: none; margin: .2rem 0 1rem; padding: 0 0 0 .6rem; border-left: 1px solid var(--border); }
nav.sidebar li { margin: .15rem 0; }
nav.sidebar a { color: var(--fg); } nav.sidebar a.active { color: var(--primary); font-weight: 600; }
.sb-home { margin-bottom: .8rem; font-weight: 600; }
.sb-title { font-weight: 600; margin-top: .4rem; } .sb-title a { color: var(--fg); }
.sb-empty { color: var(--muted); font-style: italic; }
main { padding: 1.5rem 0 4rem; min-width: 0; }
main > header h1 { font-size: 2.3rem; margin: .3rem 0 .4rem; font-weight: 600; }
main > header .description { font-size: 1.2rem; color: var(--muted); margin: 0 0 1.5rem; }
nav.toc { position: sticky; top: 3.4rem; align-self: start; padding: 1.5rem 0; font-size: .85rem; }
nav.toc h2 { font-size: .9rem; margin: 0 0 .5rem; } nav.toc ul { list-style: none; padding-left: .6rem; margin: 0; border-left: 1px solid var(--border); }
nav.toc li.l3 { padding-left: .8rem; } nav.toc a { color: var(--muted); }
h1, h2, h3, h4 { line-height: 1.25; font-weight: 600; } h2 { margin-top: 2rem; border-bottom: 1px solid var(--border); padding-bottom: .3rem; }
h3 { margin-top: 1.6rem; } .anchor-link { visibility: hidden; margin-left: .4rem; color: var(--muted); font-weight: 400; }
h1:hover .anchor-link, h2:hover .anchor-link, h3:hover .anchor-link, h4:hover .anchor-link { visibility: visible; }
code { font-family: SFMono-Regular, Menlo, Consolas, "Liberation Mono", monospace; font-size: .875em; }
p code, li code, td code { color: #9753b8; background: var(--code-bg); padding: .1em .25em; border-radius: 3px; }
a code, p a code, li a code, td a code { color: var(--primary); }
pre { margin: 0; padding: .8rem 1rem; overflow-x: auto; font-size: .85rem; line-height: 1.45; }
.cell { margin: 1rem 0; }
.input_area, .rendered_html .highlight { background: var(--code-bg); border-left: 3px solid #c9d3de; border-radius: 3px; }
.rendered_html .highlight { margin: .8rem 0; }
.output_area pre, .output_text pre { background: none; border-left: 3px solid transparent; }
.output_stderr pre { background: #fffaf0; color: #6c4a00; border-left-color: #f0d9a8; }
.output_error pre { background: #fff5f5; border-left-color: #dc3545; }
.output_png img, .output_jpeg img, .rendered_html img { max-width: 100%; height: auto; }
.output_markdown hr { border: 0; border-top: 1px solid var(--border); margin: 2rem 0 .6rem; }
.output_markdown h3 { margin-top: .2rem; font-family: SFMono-Regular, Menlo, Consolas, monospace; font-size: 1.1rem; }
.output_markdown > p > em:only-child { color: var(--fg); }
table { border-collapse: collapse; margin: 1rem 0; font-size: .9rem; }
th, td { border-bottom: 1px solid var(--border); padding: .35rem .7rem; text-align: left; vertical-align: top; }
thead th { border-bottom: 2px solid #adb5bd; }
table.dataframe { border: 0; } table.dataframe th, table.dataframe td { border: 0; border-bottom: 1px solid var(--border); }
table.dataframe thead th { border-bottom: 2px solid #adb5bd; } table.dataframe td { text-align: right; font-variant-numeric: tabular-nums; }
table.dataframe tbody tr:nth-child(odd) { background: #f8f9fa; }
blockquote { margin: 1rem 0; padding: .2rem 1rem; border-left: 4px solid var(--border); color: var(--muted); }
.callout, div[class^="callout"] { border-left: 4px solid var(--primary); background: #f0f6fd; padding: .5rem 1rem; margin: 1rem 0; border-radius: 3px; }
.callout-warning { border-left-color: #ff7518; background: #fff6ef; }
footer { color: var(--muted); font-size: .8rem; border-top: 1px solid var(--border); margin-top: 3rem; padding-top: .8rem; }
.math-notice { display: none; } html.math-failed .math-notice { display: block; background: #fff6ef; border-left: 4px solid #ff7518; padding: .5rem 1rem; font-size: .9rem; }
.katex-display { overflow-x: auto; overflow-y: hidden; }
@media (max-width: 1100px) { .layout { grid-template-columns: 220px minmax(0, 1fr); } nav.toc { display: none; } }
@media (max-width: 760px) { .layout { display: block; } nav.sidebar { position: static; max-height: none; } }
"""

# ---------------------------------------------------------------------------------------------
# Math: the renderer every page loads, and the check that a page's TeX reaches it intact
# ---------------------------------------------------------------------------------------------

MATHJAX_URL = 'https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml-full.js'   # what Quarto loads by default
KATEX_DIR = '_katex'            # where --katex copies KaTeX inside _site

@dataclass
class MathRenderer:
    "MathJax 3 from `mathjax_url` (a tex-*.js component), or, with `katex` (a folder), KaTeX copied into the site."
    mathjax_url: str = MATHJAX_URL
    katex: Path | None = None

    def describe(self) -> str:
        return f'KaTeX (copied from {self.katex} into _site/{KATEX_DIR})' if self.katex else f'MathJax 3 from {self.mathjax_url}'

def _katex_files(src: Path) -> dict[str, Path]:
    "KaTeX's browser files in `src` (Debian's /usr/share/javascript/katex, npm's katex/dist): name in site -> file."
    def first(*names):
        return next((src/n for n in names if (src/n).is_file()), None)
    files = {'katex.min.js': first('katex.min.js', 'katex.js'), 'katex.min.css': first('katex.min.css', 'katex.css'),
             'auto-render.js': first('contrib/auto-render.min.js', 'contrib/auto-render.js')}
    missing = [k for k, v in files.items() if v is None] + ([] if (src/'fonts').is_dir() else ['fonts/'])
    if missing:
        raise DocsError(f'--katex {src}: no {", ".join(missing)} there (give the folder holding katex.min.js, '
                        'contrib/ and fonts/: /usr/share/javascript/katex from apt libjs-katex, or node_modules/katex/dist)')
    return files

def copy_katex(src: Path, site: Path) -> None:
    "Copy KaTeX (script, stylesheet, auto-render, fonts) from `src` into site/_katex, following symlinks."
    dst = site/KATEX_DIR
    dst.mkdir(parents=True, exist_ok=True)
    for name, f in _katex_files(src).items(): shutil.copyfile(f, dst/name)
    shutil.copytree(src/'fonts', dst/'fonts', dirs_exist_ok=True)

# the delimiters nbconvert's markdown keeps as math, for both renderers; code, pre, script, style are skipped
_MATH_CONFIG = {'inline': [['$', '$'], ['\\(', '\\)']], 'display': [['$$', '$$'], ['\\[', '\\]']]}
MATH_FAILED = 'This page shows its math as TeX source: its math renderer, {}, could not be loaded.'
MATH_OFFLINE = ' No network? Build the docs with <code>--katex DIR</code> for pages that render math offline.'

def math_head(math: MathRenderer, up: str) -> str:
    "The <head> scripts that typeset a page's TeX; `up` is the page's way back to the site root ('../')."
    import json
    failed = 'onerror="document.documentElement.classList.add(\'math-failed\')"'
    if math.katex:
        k = f'{up}{KATEX_DIR}'
        delims = ([{'left': l, 'right': r, 'display': True} for l, r in _MATH_CONFIG['display']]
                  + [{'left': l, 'right': r, 'display': False} for l, r in _MATH_CONFIG['inline']])
        opts = {'delimiters': delims, 'throwOnError': False,
                'ignoredTags': ['script', 'noscript', 'style', 'textarea', 'pre', 'code', 'option']}
        return (f'<link rel="stylesheet" href="{k}/katex.min.css">\n'
                f'<script defer src="{k}/katex.min.js" {failed}></script>\n'
                f'<script defer src="{k}/auto-render.js" {failed} onload="renderMathInElement(document.body, '
                f'{html.escape(json.dumps(opts))})"></script>')
    cfg = {'tex': {'inlineMath': _MATH_CONFIG['inline'], 'displayMath': _MATH_CONFIG['display'],
                   'processEscapes': True, 'processEnvironments': True},
           'options': {'skipHtmlTags': ['script', 'noscript', 'style', 'textarea', 'pre', 'code']}}
    return (f'<script>window.MathJax = {json.dumps(cfg)};</script>\n'
            f'<script async id="MathJax-script" src="{html.escape(math.mathjax_url)}" {failed}></script>')

# TeX math as MathJax and KaTeX find it in text: $$..$$, \[..\], \(..\), \begin{env}..\end{env}, and $..$ with no
# space inside either dollar and no digit after the closing one (pandoc's rule, so "$5 and $10" is not math)
_re_tex = re.compile(r'\$\$.+?\$\$|\\\[.+?\\\]|\\\(.+?\\\)|\\begin\{([a-z]+\*?)\}.*?\\end\{\1\}'
                     r'|(?<![\\$])\$(?=[^\s$])[^$]+?(?<=[^\s\\])\$(?!\d)', re.S)
_re_md_code = re.compile(r'^( {0,3})(`{3,}|~{3,}).*?^\1\2[`~]*[ \t]*$|(`+)(?!`).+?(?<!`)\3(?!`)|<!--.*?-->', re.S | re.M)
_re_html_code = re.compile(r'<(pre|code|script|style|textarea)\b.*?</\1>|<!--.*?-->', re.S | re.I)
_re_renderer = re.compile(r'<script\b[^>]*\bsrc="[^"]*(?:mathjax|katex|tex-(?:chtml|svg|mml))[^"]*"', re.I)

def tex_spans(md: str) -> list[str]:
    "The TeX math of markdown `md` (outside code spans, code blocks and comments), delimiters included."
    return [m[0] for m in _re_tex.finditer(_re_md_code.sub(' ', md))]

def source_tex(path: Path) -> list[str]:
    "The TeX math a page's source shows: its markdown (and the visible cells' markdown outputs, e.g. show_doc)."
    if path.suffix != '.ipynb': return tex_spans(_yaml_fm(path.read_text(encoding='utf-8'))[1])
    import nbformat
    nb = prepare_nb(nbformat.read(path, as_version=4))
    mds = [c.source for c in nb.cells if c.cell_type == 'markdown']
    mds += [''.join(o.data['text/markdown']) if isinstance(o.data['text/markdown'], list) else o.data['text/markdown']
            for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []) if 'text/markdown' in o.get('data', {})]
    return [s for md in mds for s in tex_spans(md)]

def math_problems(page: str, spans: list[str] | None = None) -> list[str]:
    """Why the TeX math of HTML `page` would not render (empty list: it would): math but no renderer script,
    math mangled by markdown (tags such as <em> inside a $..$), and `spans` (the source's math) missing."""
    text = _re_html_code.sub(' ', page)
    found = [m[0] for m in _re_tex.finditer(text)]
    problems = []
    if (found or spans) and not _re_renderer.search(page):
        problems.append(f'has TeX math ({_short(found or spans)}) but loads no math renderer (a MathJax or KaTeX <script src>)')
    bad = [s for s in found if re.search(r'<[a-zA-Z/]', s)]
    if bad: problems.append(f'math mangled into HTML tags by the markdown renderer: {_short(bad)}')
    lost = [s for s in dict.fromkeys(spans or []) if html.escape(s, quote=False) not in page and s not in page]
    if lost: problems.append(f'{len(lost)} TeX span(s) of the source are not intact in the HTML: {_short(lost)}')
    return problems

def _short(spans: list[str], n=3) -> str:
    cut = [s if len(s) <= 80 else s[:77] + '...' for s in spans[:n]]
    return ', '.join(f'«{s}»' for s in cut) + (f' and {len(spans) - n} more' if len(spans) > n else '')

def page_html(page: Page, body: str, has_h1: bool, pages: list[Page], site: dict, toc,
              math: MathRenderer | None = None) -> str:
    from pygments.formatters import HtmlFormatter
    up = '../' * page.href.count('/')
    first = {}
    for p in pages: first.setdefault(p.section, p)
    nav = ''.join(f'<a class="sec" href="{up}{first[s].href}">{name}</a>'
                  for s, name in (('home', 'Library'), ('papers', 'Papers'), ('notes', 'Claims ledger')) if s in first)
    head = '' if has_h1 else (f'<header><h1>{html.escape(page.title)}</h1>'
                              + (f'<p class="description">{html.escape(page.description)}</p>' if page.description else '')
                              + '</header>')
    tocs = ''.join(f'<li class="l{l}"><a href="#{i}">{html.escape(t)}</a></li>' for l, i, t in toc)
    toc_html = f'<nav class="toc"><h2>On this page</h2><ul>{tocs}</ul></nav>' if len(toc) > 1 else '<div></div>'
    title = page.title if page.section == 'home' else f'{page.title} – {site["title"]}'
    math = math or MathRenderer()
    has_math = _re_tex.search(_re_html_code.sub(' ', head + body))
    why = MATH_FAILED.format(html.escape(math.describe())) + ('' if math.katex else MATH_OFFLINE)
    notice = f'<p class="math-notice">{why}</p>\n' if has_math else ''
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<meta name="description" content="{html.escape(page.description)}">
<style>{CSS}
{HtmlFormatter(style='default').get_style_defs('.highlight')}
.highlight {{ background: var(--code-bg); }}</style>
{math_head(math, up)}
</head><body>
<header class="navbar"><a href="{up}index.html">{html.escape(site['title'])}</a>{nav}</header>
<div class="layout">
{_sidebar(pages, page)}
<main>
{notice}{head}
{body}
<footer>Generated from <code>{html.escape(page.src)}</code> by <code>.ci/docs.py</code> (nbconvert); the Quarto build of the same site is <code>python .ci/docs.py --quarto</code>.</footer>
</main>
{toc_html}
</div></body></html>
"""

def render_fallback(out: Path, pages: list[Page], cfg, math: MathRenderer | None = None) -> list[str]:
    "Render every page into out/_site with nbconvert, math typeset by `math`; return the list of failures."
    math = math or MathRenderer()
    proc, site = out/'_proc', out/'_site'
    info = {'title': cfg.get('title') or cfg.get('lib_name', '')}
    site_url = cfg.get('doc_host', '') + cfg.get('doc_baseurl', '')
    exporter, errors = _exporter(), []
    if math.katex: copy_katex(math.katex, site)
    for f in proc.rglob('*'):      # assets (images referenced by relative path, csv files, ...)
        if f.is_file() and f.suffix.lower() in ASSET_SUFFIXES:
            (site/f.relative_to(proc)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, site/f.relative_to(proc))
    for p in pages:
        src = proc/p.src
        try:
            body, has_h1 = render_nb_body(src, exporter) if src.suffix == '.ipynb' else render_md_body(src)
            body, toc = fix_headings(body)
            body = fix_links(body, p, pages, site_url)
            if not _text(body) and not re.search(r'<(img|svg)\b', body):
                errors.append(f'{p.src}: rendered page is empty'); continue
            dst = site/p.href
            dst.parent.mkdir(parents=True, exist_ok=True)
            page = page_html(p, body, has_h1, pages, info, toc, math)
            errors += [f'{p.src}: {e}' for e in math_problems(page, source_tex(src))]
            dst.write_text(page, encoding='utf-8')
        except Exception as e:
            errors.append(f'{p.src}: {type(e).__name__}: {e}')
    return errors

def render_quarto(out: Path, pages: list[Page]) -> list[str]:
    proc, site = out/'_proc', out/'_site'
    r = subprocess.run(['quarto', 'render', str(proc)], capture_output=True, text=True)
    if r.returncode: return [f'quarto render failed (exit {r.returncode}):\n{r.stderr[-4000:]}']
    if site.exists(): shutil.rmtree(site)
    shutil.move(str(proc/'_site'), str(site))
    errors = []
    for p in pages:
        f = site/p.href
        if not f.exists(): errors.append(f'{p.src}: quarto wrote no {p.href}')
        else:
            page = f.read_text(encoding='utf-8')
            main = re.search(r'<main\b.*?</main>', page, re.S)
            if not main or not _text(main[0]): errors.append(f'{p.src}: rendered page is empty')
            errors += [f'{p.src}: {e}' for e in math_problems(page)]   # pandoc rewrites delimiters: no span check
    return errors

def main(argv=None):
    ap = argparse.ArgumentParser(prog='docs.py', description=__doc__.split('\n')[0])
    ap.add_argument('--out', type=Path, default=ROOT, help='folder for _proc/ and _site/ (default: the repo root)')
    ap.add_argument('--quarto', action='store_true', help='render with `quarto render _proc` if quarto is on PATH')
    ap.add_argument('--workers', type=int, default=max(1, min(4, os.cpu_count() or 1)), help='processes for nbdev processing')
    ap.add_argument('--mathjax-url', default=MATHJAX_URL, metavar='URL',
                    help='MathJax 3 component every page loads (default, as Quarto: %(default)s)')
    ap.add_argument('--katex', type=Path, metavar='DIR',
                    help='typeset math with KaTeX copied from DIR into the site, so pages render math offline '
                         '(DIR holds katex.min.js, contrib/ and fonts/: /usr/share/javascript/katex, node_modules/katex/dist)')
    ap.add_argument('-v', '--verbose', action='store_true', help="show nbdev's warnings")
    a = ap.parse_args(argv)
    t0 = time.time()
    os.chdir(ROOT)                 # nbdev finds settings.ini from the working directory
    from nbdev.config import get_config
    cfg = get_config()
    out = a.out.resolve()
    site = out/'_site'
    math = MathRenderer(a.mathjax_url, a.katex.resolve() if a.katex else None)
    if math.katex:
        try: _katex_files(math.katex)
        except DocsError as e: sys.exit(f'docs: FAILED: {e}')
    try: pages, errors = assemble(out, a.workers, a.verbose)
    except DocsError as e: sys.exit(f'docs: FAILED to assemble {out/"_proc"}: {e}')
    if site.exists(): shutil.rmtree(site)
    site.mkdir(parents=True)
    use_quarto = a.quarto and shutil.which('quarto')
    if a.quarto and not use_quarto: print('docs: quarto is not on PATH; rendering with nbconvert', file=sys.stderr)
    if use_quarto and (a.katex or a.mathjax_url != MATHJAX_URL):
        print('docs: --katex/--mathjax-url apply to the nbconvert rendering; Quarto uses html-math-method '
              'of _quarto.yml', file=sys.stderr)
    render_errors = render_quarto(out, pages) if use_quarto else render_fallback(out, pages, cfg, math)
    n = {s: sum(p.section == s for p in pages) for s in SECTIONS}
    how = 'quarto' if use_quarto else f'nbconvert, math by {math.describe()}'
    if errors or render_errors:
        sys.exit(f'docs: FAILED: {len(errors) + len(render_errors)} page(s) could not be built (the other '
                 f'{len(pages) - len(render_errors)} are in {site}):\n' + '\n'.join(errors + render_errors))
    print(f'docs: {len(pages)} pages rendered with {how} into {site} in {time.time() - t0:.1f}s '
          f'(library {n["home"] + n["library"]}, papers {n["papers"] - 1}, claims ledger {n["notes"] - 1}, '
          f'+2 section landing pages); open {site/"index.html"}')

if __name__ == '__main__': main()
