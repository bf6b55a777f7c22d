"""Fixtures of the data tests: the toy datasets generated once per session under a temporary root."""
import pytest

from resdet.data.datasets import make_toy_data


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    """A $RESDET_DATASETS root holding toy/ (seed 0)."""
    root = tmp_path_factory.mktemp("datasets")
    make_toy_data(str(root / "toy"), seed=0)
    return root


@pytest.fixture
def toy_env(toy_root, monkeypatch):
    """RESDET_DATASETS pointed at the generated toy root for one test."""
    monkeypatch.setenv("RESDET_DATASETS", str(toy_root))
    return toy_root
