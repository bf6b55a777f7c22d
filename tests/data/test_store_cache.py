"""The record store's cache file: written once, mapped by later starts; a changed source makes a new one; a damaged,
half-written or foreign file is never read; an unwritable cache folder falls back to memory with a warning."""
import json
import logging
import os
import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest

from resdet.data import store_cache
from resdet.data.datasets import DatasetCatalog

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_coco(folder, boxes):
    """A 2-image COCO json (one box per entry of `boxes`, all on image 1) and its images folder."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    data = {"images": [{"id": 1, "file_name": "a.jpg", "height": 20, "width": 30},
                       {"id": 2, "file_name": "b.jpg", "height": 30, "width": 20}],
            "annotations": [{"id": k + 1, "image_id": 1, "category_id": 7, "bbox": box, "iscrowd": 0}
                            for k, box in enumerate(boxes)],
            "categories": [{"id": 7, "name": "thing"}]}
    (folder / "ann.json").write_text(json.dumps(data))
    return f"coco:{folder / 'ann.json'}:{folder / 'images'}"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """RESDET_CACHE in a fresh folder; this process's memory of opened stores emptied before and after."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("RESDET_CACHE", str(folder))
    monkeypatch.setattr(store_cache, "_opened", {})
    return folder


def store_files(folder):
    return sorted(name for name in os.listdir(folder) if name.endswith(".store"))


def test_a_changed_json_gets_a_new_cache_file(tmp_path, cache):
    name = write_coco(tmp_path / "data", [[1, 2, 3, 4]])
    first = DatasetCatalog.get(name)
    assert [a["bbox"] for a in first[0]["annotations"]] == [[1.0, 2.0, 4.0, 6.0]]
    assert len(store_files(cache)) == 1 and DatasetCatalog.get_records(name).path is not None
    write_coco(tmp_path / "data", [[1, 2, 3, 4], [5, 5, 5, 5]])
    second = DatasetCatalog.get(name)
    assert [a["bbox"] for a in second[0]["annotations"]] == [[1.0, 2.0, 4.0, 6.0], [5.0, 5.0, 10.0, 10.0]]
    assert len(store_files(cache)) == 2


def test_a_damaged_cache_file_is_rebuilt(tmp_path, cache, monkeypatch, caplog):
    name = write_coco(tmp_path / "data", [[1, 2, 3, 4]])
    expected = DatasetCatalog.get(name)
    (path,) = [cache / f for f in store_files(cache)]
    path.write_bytes(path.read_bytes()[:-10])  # cut short, as by a disk that filled up
    monkeypatch.setattr(store_cache, "_opened", {})  # a new process
    with caplog.at_level(logging.WARNING):
        assert DatasetCatalog.get(name) == expected
    assert "incomplete; building it again" in caplog.text
    assert store_files(cache) == [path.name] and DatasetCatalog.get_records(name).path == str(path)


def test_a_writer_killed_before_the_rename_leaves_nothing_readable(tmp_path, cache):
    name = write_coco(tmp_path / "data", [[1, 2, 3, 4]])
    script = ("import os, signal\nfrom resdet.data.datasets import DatasetCatalog\n"
              "os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)\n"
              f"DatasetCatalog.get_records({name!r})\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=dict(os.environ), timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert store_files(cache) == [] and any(".tmp." in f for f in os.listdir(cache))  # the whole file, unrenamed
    records = DatasetCatalog.get(name)
    assert [a["bbox"] for a in records[0]["annotations"]] == [[1.0, 2.0, 4.0, 6.0]]
    assert len(store_files(cache)) == 1


def test_an_unwritable_cache_folder_keeps_the_records_in_memory(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("RESDET_CACHE", str(blocker / "cache"))  # below a file: cannot be created
    monkeypatch.setattr(store_cache, "_opened", {})
    name = write_coco(tmp_path / "data", [[1, 2, 3, 4]])
    with caplog.at_level(logging.WARNING):
        store = DatasetCatalog.get_records(name)
    assert store.path is None and len(store) == 2
    assert f"cannot write the dataset cache in {blocker / 'cache'}" in caplog.text and "RESDET_CACHE" in caplog.text


def test_image_folder_cache_follows_added_images(tmp_path, cache, monkeypatch):
    root = tmp_path / "folders"
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        cv2.imwrite(str(root / cls / "1.jpg"), np.zeros((8, 8, 3), np.uint8))
    from resdet.data.datasets.image_folder import load_image_folder

    assert [(os.path.basename(r["file_name"]), r["label"]) for r in load_image_folder("f", str(root))] == \
        [("1.jpg", 0), ("1.jpg", 1)]
    cv2.imwrite(str(root / "dog" / "2.png"), np.zeros((8, 8, 3), np.uint8))
    (root / "dog" / "notes.txt").write_text("not an image")
    assert [(os.path.basename(r["file_name"]), r["label"]) for r in load_image_folder("f", str(root))] == \
        [("1.jpg", 0), ("1.jpg", 1), ("2.png", 1)]
    assert len(store_files(cache)) == 2
