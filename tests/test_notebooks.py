"Every library notebook runs top to bottom (its examples check themselves); slow/gpu cells are skipped."
from pathlib import Path
import pytest
from nbdev import test as nbdev_test

NBS = sorted(p for p in (Path(__file__).parent.parent/'nbs').glob('*.ipynb') if not p.name.startswith('_'))

@pytest.mark.parametrize('nb', NBS, ids=[p.stem for p in NBS])
def test_notebook(nb, monkeypatch):
    monkeypatch.chdir(nb.parent)
    ok, _ = nbdev_test.test_nb(nb, skip_flags=['slow', 'gpu'])
    assert ok, f'{nb.name} failed; run: nbdev_test --path {nb}'
