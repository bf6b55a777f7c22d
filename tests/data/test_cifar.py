"""CIFAR-10 python batches: pixel layout, the paper's 45k/5k split, refusal of pickles that would run code."""
import os
import pickle

import numpy as np
import pytest

from resdet.data import DatasetCatalog, MetadataCatalog

ROWS = 4  # per batch: 20 training images, the last 2 (a tenth) are validation


def _write_batch(path, labels, first_value):
    data = np.zeros((len(labels), 3072), dtype=np.uint8)
    # image i: pixel (y=2, x=5) has channels (R, G, B) = (first_value + i, 200, 7); rows are 1024 R, G, B planes
    for i in range(len(labels)):
        data[i, 0 * 1024 + 2 * 32 + 5] = first_value + i
        data[i, 1 * 1024 + 2 * 32 + 5] = 200
        data[i, 2 * 1024 + 2 * 32 + 5] = 7
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"x", b"labels": list(labels), b"data": data}, f, protocol=2)


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    folder = tmp_path / "cifar10" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(5):
        _write_batch(folder / f"data_batch_{b + 1}", [(b * ROWS + i) % 10 for i in range(ROWS)], b * ROWS)
    _write_batch(folder / "test_batch", [9, 8, 7], 100)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_cases_per_batch": ROWS}, f, protocol=2)
    monkeypatch.setenv("RESDET_DATASETS", str(tmp_path))
    return folder


def test_reads_pixels_labels_and_split(cifar_root):
    train = DatasetCatalog.get("cifar10_train")
    assert len(train) == 5 * ROWS
    assert [d["label"] for d in train] == [i % 10 for i in range(5 * ROWS)]
    for i, record in enumerate(train):
        assert record["image"].shape == (32, 32, 3) and record["image"].dtype == np.uint8
        assert record["image"][2, 5].tolist() == [i, 200, 7]
    train45k, val5k = DatasetCatalog.get("cifar10_train45k"), DatasetCatalog.get("cifar10_val5k")
    assert (len(train45k), len(val5k)) == (18, 2)  # 45:5 of the 20
    assert [d["image"][2, 5, 0] for d in train45k] == list(range(18))
    assert [d["image"][2, 5, 0] for d in val5k] == [18, 19]
    test = DatasetCatalog.get("cifar10_test")
    assert [d["label"] for d in test] == [9, 8, 7] and test[2]["image"][2, 5, 0] == 102
    assert MetadataCatalog.get("cifar10_test").thing_classes[1] == "automobile"


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_malicious_pickle_refused(cifar_root, tmp_path):
    marker = str(tmp_path / "pwned")
    with open(cifar_root / "data_batch_3", "wb") as f:
        pickle.dump({b"data": _RunsCode(marker), b"labels": []}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="data_batch_3.*refusing"):
        DatasetCatalog.get("cifar10_train")
    assert not os.path.exists(marker)
