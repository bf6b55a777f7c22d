"""The CIFAR-format shapes set: read by the CIFAR-10 loader, 32x32 RGB, labels 0..9, every class equally often."""
import os
import pickle
import subprocess
import sys

import numpy as np

from resdet.data import DatasetCatalog
from resdet.data.datasets.toy_shapes import SHAPES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 3


def test_cifar_flag_writes_what_the_loader_reads(tmp_path, monkeypatch):
    out = tmp_path / "cifar10"  # the CIFAR-10 catalog entries read $RESDET_DATASETS/cifar10/cifar-10-batches-py
    command = [sys.executable, os.path.join(ROOT, "tools", "make_toy_data.py"), "--cifar", "--out", str(out),
               "--train-per-class", str(TRAIN_PER_CLASS), "--test-per-class", str(TEST_PER_CLASS)]
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    folder = out / "cifar-10-batches-py"
    assert sorted(os.listdir(folder)) == ["batches.meta"] + [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    with open(folder / "data_batch_1", "rb") as f:
        batch = pickle.load(f)
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}  # bytes keys, as CIFAR-10's own
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (2 * len(SHAPES), 3072)

    monkeypatch.setenv("RESDET_DATASETS", str(tmp_path))
    for name, per_class in (("cifar10_train", TRAIN_PER_CLASS), ("cifar10_test", TEST_PER_CLASS),
                            ("cifar10_val5k", TRAIN_PER_CLASS // 10)):
        records = DatasetCatalog.get(name)
        assert len(records) == per_class * len(SHAPES)
        assert all(r["image"].shape == (32, 32, 3) and r["image"].dtype == np.uint8 for r in records)
        labels = np.array([r["label"] for r in records])
        assert labels.min() == 0 and labels.max() == 9
        assert np.bincount(labels, minlength=10).tolist() == [per_class] * 10  # the validation batch too
    # the class names as CIFAR-10 stores them (the catalog's metadata is cached per process, so other tests'
    # CIFAR-10 names may already be there)
    with open(folder / "batches.meta", "rb") as f:
        assert [name.decode() for name in pickle.load(f)[b"label_names"]] == list(SHAPES)
    images = np.stack([r["image"] for r in DatasetCatalog.get("cifar10_train")])
    assert images.std() > 20 and len(np.unique(images.reshape(len(images), -1), axis=0)) == len(images)


def test_same_seed_same_bytes(tmp_path):
    from resdet.data.datasets.toy_cifar import make_toy_cifar

    first, second = (make_toy_cifar(str(tmp_path / name), 3, 10, 1) for name in ("a", "b"))
    for name in os.listdir(first):
        assert (open(os.path.join(first, name), "rb").read() == open(os.path.join(second, name), "rb").read()), name


def test_bad_sizes_exit_2(tmp_path):
    command = [sys.executable, os.path.join(ROOT, "tools", "make_toy_data.py"), "--cifar", "--out", str(tmp_path),
               "--train-per-class", "15"]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 2 and "--train-per-class" in result.stderr
