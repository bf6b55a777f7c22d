"""The ImageNet-format shapes set: its folder layout is ImageNet's, the real imagenet_train / imagenet_val loaders
read it with the labels of its folders, and the files do not depend on the number of writing processes."""
import hashlib
import os

import cv2
import numpy as np
import pytest

from resdet.data import DatasetCatalog, MetadataCatalog
from resdet.data.datasets import toy_imagenet

TRAIN_PER_CLASS, VAL_PER_CLASS = 2, 1


def _digests(folder: str) -> dict:
    digests = {}
    for root, _, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                digests[os.path.relpath(os.path.join(root, name), folder)] = hashlib.sha256(f.read()).hexdigest()
    return digests


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("datasets"))
    toy_imagenet.make_toy_imagenet(out, seed=0, train_per_class=TRAIN_PER_CLASS, val_per_class=VAL_PER_CLASS,
                                   processes=2)
    return out


def test_layout_is_imagenets(imagenet_root):
    folder = os.path.join(imagenet_root, "imagenet")
    wnids = [f"n{label:08d}" for label in range(40)]
    assert sorted(os.listdir(os.path.join(folder, "train"))) == wnids
    assert sorted(os.listdir(os.path.join(folder, "val"))) == wnids
    train_files = sorted(os.listdir(os.path.join(folder, "train", wnids[7])))
    assert train_files == [name for name in train_files if name.startswith(wnids[7] + "_") and name.endswith(".JPEG")]
    assert len(train_files) == TRAIN_PER_CLASS
    val_files = [name for wnid in wnids for name in os.listdir(os.path.join(folder, "val", wnid))]
    # ILSVRC2012's val names: one number per image across the classes, 1..N
    assert sorted(val_files) == [f"ILSVRC2012_val_{n:08d}.JPEG" for n in range(1, 41)]
    with open(os.path.join(folder, "synset_words.txt")) as f:
        lines = f.read().splitlines()
    assert lines[0] == "n00000000 arrow, solid" and lines[5] == "n00000005 circle, stripes" and len(lines) == 40
    image = cv2.imread(os.path.join(folder, "train", wnids[7], train_files[0]))
    assert min(image.shape[:2]) == toy_imagenet.SHORT_SIDE and max(image.shape[:2]) <= toy_imagenet.MAX_LONG_SIDE


def test_real_imagenet_loaders_read_it(imagenet_root, monkeypatch, tmp_path):
    monkeypatch.setenv("RESDET_DATASETS", imagenet_root)
    monkeypatch.setenv("RESDET_CACHE", str(tmp_path / "cache"))
    train, val = DatasetCatalog.get("imagenet_train"), DatasetCatalog.get("imagenet_val")
    assert len(train) == 40 * TRAIN_PER_CLASS and len(val) == 40 * VAL_PER_CLASS
    for records in (train, val):
        for record in records:
            # the label is the position of the image's folder among the sorted wnids
            assert os.path.basename(os.path.dirname(record["file_name"])) == f"n{int(record['label']):08d}"
    assert np.bincount([int(r["label"]) for r in train]).tolist() == [TRAIN_PER_CLASS] * 40
    assert MetadataCatalog.get("imagenet_val").thing_classes[32] == "n00000032"


def test_same_files_with_one_process(imagenet_root, tmp_path):
    toy_imagenet.make_toy_imagenet(str(tmp_path), seed=0, train_per_class=TRAIN_PER_CLASS,
                                   val_per_class=VAL_PER_CLASS, processes=1)
    assert _digests(str(tmp_path / "imagenet")) == _digests(os.path.join(imagenet_root, "imagenet"))


def test_textures_are_what_they_say():
    """Stripes across the shape's axis and dots against a hand computation; the outline leaves the inside."""
    centre, period = np.array([20.0, 20.0]), 8.0
    alpha = np.ones((40, 40), np.float32)
    stripes = toy_imagenet._texture_mask("stripes", 40, 40, centre, 0.0, period, alpha)
    # angle 0: u = x - 20, first colour where (u / 8) mod 1 < 0.5
    assert stripes[5, 20:24].tolist() == [1, 1, 1, 1] and stripes[5, 24:28].tolist() == [0, 0, 0, 0]
    assert (stripes == stripes[0]).all()  # constant down the columns
    turned = toy_imagenet._texture_mask("stripes", 40, 40, centre, np.pi / 2, period, alpha)
    # a quarter turn: rows instead of columns (away from the boundaries 20, 24, 28, where rounding decides)
    np.testing.assert_array_equal(turned[[21, 23, 25, 27, 29, 31], 5], [1, 1, 0, 0, 1, 1])
    dots = toy_imagenet._texture_mask("dots", 40, 40, centre, 0.0, period, alpha)
    # lattice cells of 8 from the centre: dots of radius 0.3 * 8 = 2.4 px at the cells' middles (24, 24), (32, 24)
    assert dots[24, 24] == 1 and dots[24, 32] == 1 and dots[24, 27] == 0 and dots[20, 20] == 0
    disk = np.zeros((40, 40), np.float32)
    cv2.circle(disk, (20, 20), 15, 1.0, -1)
    outline = toy_imagenet._texture_mask("outline", 40, 40, centre, 0.0, period, disk)
    assert outline[20, 20] == 0 and outline[20, 6] == 1


def test_cli_writes_the_set(tmp_path, capsys):
    import runpy
    import sys

    tool = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "tools", "make_toy_data.py")
    argv = sys.argv
    sys.argv = [tool, "--imagenet", "--out", str(tmp_path), "--train-per-class", "1", "--val-per-class", "1"]
    try:
        runpy.run_path(tool, run_name="__main__")
    except SystemExit as exit_:
        assert not exit_.code
    finally:
        sys.argv = argv
    assert "40 classes, 40 training, 40 validation images" in capsys.readouterr().out
    assert len(os.listdir(tmp_path / "imagenet" / "val")) == 40
