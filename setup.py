# Build shim for pip: every setting lives in settings.ini (nbdev 2); edit there, not here.
# One addition: the replication notebooks (papers/*.ipynb, edited there) ship inside the wheel as
# ticketlab/paper_notebooks/, copied at build time (BuildPyWithPapers), so `ticketlab replicate` works from a
# plain `pip install`. They are never copied into the source tree; an editable install reads papers/ itself.
from configparser import ConfigParser
from pathlib import Path
import setuptools, shlex
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
config = ConfigParser(delimiters=['='])
config.read(HERE/'settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

licenses = dict(apache2=('Apache Software License 2.0', 'OSI Approved :: Apache Software License'))
statuses = ['Planning', 'Pre-Alpha', 'Alpha', 'Beta', 'Production/Stable', 'Mature', 'Inactive']
lic = licenses.get(cfg['license'].lower(), (cfg['license'], None))
requirements = shlex.split(cfg.get('requirements', ''))
# every `<name>_requirements` line of settings.ini is the extra `ticketlab[<name>]` (dev, jupyter, ...);
# pip_/conda_requirements are nbdev's own keys, not extras
extras = {k[:-len('_requirements')]: shlex.split(v) for k, v in cfg.items()
          if k.endswith('_requirements') and k not in ('pip_requirements', 'conda_requirements') and v.strip()}

PAPERS_SRC, PAPERS_PKG = 'papers', 'paper_notebooks'

class BuildPyWithPapers(build_py):
    "build_py, then papers/*.ipynb and papers/README.md copied into the built package as <lib>/paper_notebooks/."
    def run(self):
        super().run()
        if getattr(self, 'editable_mode', False): return     # editable: ticketlab.papers reads the checkout's papers/
        src = HERE/PAPERS_SRC
        nbs = sorted(src.glob('*.ipynb'))
        if not nbs: raise FileNotFoundError(f'no replication notebooks in {src}: the wheel would have no papers to run '
                                            '(an sdist must carry papers/*.ipynb, see MANIFEST.in)')
        dest = Path(self.build_lib)/cfg['lib_path']/PAPERS_PKG
        self.mkpath(str(dest))
        for f in nbs + [p for p in [src/'README.md'] if p.is_file()]: self.copy_file(str(f), str(dest/f.name))

setuptools.setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    keywords=cfg['keywords'], author=cfg['author'], author_email=cfg['author_email'],
    license=lic[0], url=cfg['git_url'],
    classifiers=['Development Status :: ' + f"{cfg['status']} - {statuses[int(cfg['status'])]}",
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title()]
                + ([f'License :: {lic[1]}'] if lic[1] else []),
    packages=setuptools.find_packages(include=[cfg['lib_path'], cfg['lib_path'] + '.*']),
    include_package_data=True,
    install_requires=requirements,
    extras_require=extras,
    python_requires='>=' + cfg['min_python'],
    long_description=(HERE/'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    zip_safe=False,
    cmdclass={'build_py': BuildPyWithPapers},
    entry_points={'console_scripts': cfg.get('console_scripts', '').split(),
                  'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
