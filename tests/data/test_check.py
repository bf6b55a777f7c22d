"""check_dataset: counts, unreadable and missing images, images whose size differs from the annotations, and
which of these make a dataset unusable for training or evaluation."""
import json

import cv2
import numpy as np
import pytest

from resdet.data import DatasetCatalog, register_coco_instances
from resdet.data.check import check_dataset


@pytest.fixture
def coco_name(tmp_path):
    """Four images listed: a.jpg good, b.jpg 10 px taller than listed, c.jpg missing, d.jpg not an image."""
    image = np.zeros((20, 30, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.jpg"), image)
    cv2.imwrite(str(tmp_path / "b.jpg"), np.zeros((30, 30, 3), np.uint8))
    (tmp_path / "d.jpg").write_bytes(b"not an image")
    images = [{"id": i, "file_name": f"{n}.jpg", "height": 20, "width": 30} for i, n in enumerate("abcd", 1)]
    annotations = [{"id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 1, 5, 5]},
                   {"id": 2, "image_id": 2, "category_id": 2, "bbox": [1, 1, 5, 5], "iscrowd": 1},
                   {"id": 3, "image_id": 3, "category_id": 1, "bbox": [1, 1, 5, 5]}]
    (tmp_path / "ann.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                   "categories": [{"id": 1, "name": "x"}, {"id": 2, "name": "y"}]}))
    register_coco_instances("test_check_coco", str(tmp_path / "ann.json"), str(tmp_path))
    yield "test_check_coco"
    DatasetCatalog.remove("test_check_coco")


def test_counts_and_bad_images(coco_name, tmp_path):
    report = check_dataset(coco_name, "train", workers=2)
    assert (report.num_images, report.num_annotations, report.class_counts) == (4, 3, [1, 2])
    assert report.classes == ["x", "y"] and report.images_without_boxes == 2  # b: only a crowd box; d: none
    assert report.unreadable == [(str(tmp_path / "c.jpg"), "the file does not exist"),
                                 (str(tmp_path / "d.jpg"), report.unreadable[1][1])]
    assert "OpenCV" in report.unreadable[1][1]
    assert report.size_mismatch == [(str(tmp_path / "b.jpg"), "30x30 in the file, 30x20 in the annotations")]
    problems = report.problems(skip_corrupt=False)
    assert len(problems) == 2 and "2 unreadable images" in problems[0] and "SKIP_CORRUPT" in problems[0]
    assert "1 images differ in size" in problems[1]
    assert len(report.problems(skip_corrupt=True)) == 1  # skipping leaves only the misplaced boxes
    text = "\n".join(report.lines())
    assert "per class: x 1, y 2" in text and f"{tmp_path / 'c.jpg'}: the file does not exist" in text


def test_test_datasets_need_every_image_and_no_images_skips_decoding(coco_name):
    report = check_dataset(coco_name, "test")
    assert any("evaluation needs every image" in p for p in report.problems(skip_corrupt=True))
    report = check_dataset(coco_name, "test", decode_images=False)
    assert not report.decoded and report.problems(skip_corrupt=False) == []


def test_unloadable_dataset_reported_not_raised():
    report = check_dataset("no_such_dataset_anywhere")
    assert "not registered" in report.error and report.problems(skip_corrupt=True) == [report.error]
