"""Shared fixtures: a small default config, a temporary output directory, the toy datasets."""

import pytest
import torch

torch.set_num_threads(2)


def pytest_configure(config):
    """The markers the tests use (this file is the suite's pytest configuration)."""
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (tests/gpu; skipped without one). Run: pytest -m gpu "
                                       "tests/gpu, or tools/gpu_check.sh (docs/gpu.md)")


@pytest.fixture
def cfg():
    """A fresh default config on the CPU."""
    import resdet

    c = resdet.get_cfg()
    c.MODEL.DEVICE = "cpu"
    return c


@pytest.fixture(scope="session")
def toy_datasets(tmp_path_factory):
    """A RESDET_DATASETS root holding the embedded toy datasets under toy/ (written once per session)."""
    from resdet.data import make_toy_data

    root = tmp_path_factory.mktemp("datasets")
    make_toy_data(str(root / "toy"), seed=0)
    return root


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory):
    """A RESDET_DATASETS root with a tiny cifar10/cifar-10-batches-py in the official pickle format
    (dicts with bytes keys, b"data" (n,3072) uint8 as 1024 R, 1024 G, 1024 B values, b"labels")."""
    import pickle

    import numpy as np

    root = tmp_path_factory.mktemp("datasets")
    folder = root / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in rng.integers(0, 10, 20)],
                 b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                 b"filenames": [f"{index}_{i}.png".encode() for i in range(20)]}
        with open(folder / name, "wb") as file:
            pickle.dump(batch, file, protocol=2)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump({b"label_names": names, b"num_vis": 3072, b"num_cases_per_batch": 20}, file, protocol=2)
    return root
