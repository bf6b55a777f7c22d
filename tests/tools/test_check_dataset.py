"""tools/check_dataset.py on small toy data: counts of a usable config (exit 0), every broken image and annotation
named and exit 2 when the data is not usable, DATALOADER.SKIP_CORRUPT and --no-images."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from resdet.data import make_toy_data

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "configs/toy_frcnn_r18_fpn.yaml"


def run_check(args, datasets_root):
    env = dict(os.environ, RESDET_DATASETS=str(datasets_root), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "tools/check_dataset.py", "--config", CONFIG, "--workers", "1", *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def good_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    make_toy_data(str(root / "toy"), seed=0, cls_per_class={"train": 1, "val": 1}, det_images={"train": 4, "val": 2})
    return root


@pytest.fixture(scope="module")
def broken_root(good_root, tmp_path_factory):
    """The toy data with image 000001.jpg truncated and two bad annotations in the training json."""
    root = tmp_path_factory.mktemp("broken")
    shutil.copytree(good_root / "toy", root / "toy")
    json_file = root / "toy/coco/annotations/instances_train.json"
    data = json.loads(json_file.read_text())
    data["annotations"][0]["category_id"] = 999
    data["annotations"][1]["bbox"][2] = 0
    json_file.write_text(json.dumps(data))
    image = root / "toy/coco/train/000001.jpg"
    image.write_bytes(image.read_bytes()[:500])
    return root


def test_usable_data_counts_and_exit_0(good_root):
    result = run_check([], good_root)
    assert result.returncode == 0, result.stderr
    train = json.loads((good_root / "toy/coco/annotations/instances_train.json").read_text())
    assert "dataset toy_coco_train (train)" in result.stdout and "dataset toy_coco_val (test)" in result.stdout
    assert f"images: 4, annotations: {len(train['annotations'])}" in result.stdout
    assert "per class: circle " in result.stdout and "unreadable images: 0" in result.stdout
    assert "2 datasets checked: usable" in result.stdout


def test_broken_data_named_and_exit_2(broken_root):
    result = run_check([], broken_root)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "annotations dropped (1), category_id not in 'categories'" in result.stdout
    assert "annotations[0] (id 1, image 1)" in result.stdout and "'category_id': 999" in result.stdout
    assert "annotations dropped (1), zero or negative width or height" in result.stdout
    assert "unreadable images: 1" in result.stdout
    assert f"{broken_root}/toy/coco/train/000001.jpg: truncated JPEG" in result.stdout
    assert "error: the data is not usable" in result.stderr
    assert "'toy_coco_train': 1 unreadable images" in result.stderr and "DATALOADER.SKIP_CORRUPT" in result.stderr


def test_skip_corrupt_makes_it_usable_and_no_images_skips_decoding(broken_root):
    result = run_check(["DATALOADER.SKIP_CORRUPT", "True"], broken_root)
    assert result.returncode == 0, result.stderr
    assert "000001.jpg: truncated JPEG" in result.stdout
    result = run_check(["--no-images"], broken_root)
    assert result.returncode == 0, result.stderr
    assert "images not decoded (--no-images)" in result.stdout and "category_id not in 'categories'" in result.stdout


def test_unloadable_dataset_and_class_count_exit_2(good_root, tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    result = run_check(["DATASETS.TEST", f"('coco:{tmp_path}/bad.json:{tmp_path}',)",
                        "MODEL.ROI_HEADS.NUM_CLASSES", "3"], good_root)
    assert result.returncode == 2
    assert f"cannot be loaded: {tmp_path}/bad.json: not valid JSON" in result.stdout
    assert "MODEL.ROI_HEADS.NUM_CLASSES is 3 but dataset 'toy_coco_train' has 4 classes" in result.stderr
