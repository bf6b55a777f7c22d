"""The toy generator: determinism, and files that the reference readers (pycocotools, ElementTree) accept."""
import contextlib
import io
import os
import xml.etree.ElementTree as ET

import cv2
import numpy as np
from pycocotools.coco import COCO

from resdet.data import DatasetCatalog, MetadataCatalog, make_toy_data


def _tree_bytes(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


SMALL = dict(cls_per_class={"train": 2, "val": 1}, det_images={"train": 3, "val": 2})


def test_same_seed_same_bytes_other_seed_differs(toy_root, tmp_path):
    first = _tree_bytes(make_toy_data(str(tmp_path / "first"), seed=0, **SMALL))
    assert _tree_bytes(make_toy_data(str(tmp_path / "again"), seed=0, **SMALL)) == first
    other = _tree_bytes(make_toy_data(str(tmp_path / "other"), seed=1, **SMALL))
    assert other.keys() == first.keys()
    assert other["coco/annotations/instances_train.json"] != first["coco/annotations/instances_train.json"]
    # an image's bytes depend on the seed and its index, not on how many are written: the full set agrees
    full = toy_root / "toy"
    for name in [k for k in first if k.startswith("cls/") or k.startswith("coco/train/")]:
        assert (full / name).read_bytes() == first[name], name


def test_layout_and_sizes(toy_root):
    toy = toy_root / "toy"
    for split, per_class in (("train", 1000), ("val", 100)):
        classes = sorted(os.listdir(toy / "cls" / split))
        # the pretraining classes hold the detection classes among others, as ImageNet holds COCO's
        assert len(classes) == 10 and {"circle", "cross", "square", "triangle"} <= set(classes)
        for cls in classes:
            files = sorted(os.listdir(toy / "cls" / split / cls))
            assert len(files) == per_class
            assert cv2.imread(str(toy / "cls" / split / cls / files[0])).shape == (64, 64, 3)


def _coco(path):
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_coco_json_with_pycocotools(toy_root):
    toy = toy_root / "toy" / "coco"
    train, val = _coco(toy / "annotations/instances_train.json"), _coco(toy / "annotations/instances_val.json")
    assert len(train.getImgIds()) == 1000 and len(val.getImgIds()) == 200
    assert not any(a["iscrowd"] for a in train.dataset["annotations"])
    assert sum(a["iscrowd"] for a in val.dataset["annotations"]) == 200 // 8  # every 8th scene
    for api, split in ((train, "train"), (val, "val")):
        for image_id in api.getImgIds():
            info = api.imgs[image_id]
            assert 128 <= info["height"] <= 160 and 128 <= info["width"] <= 160
            image = cv2.imread(str(toy / split / info["file_name"]))
            assert image.shape[:2] == (info["height"], info["width"])
            boxes = np.array([a["bbox"] for a in api.imgToAnns[image_id] if not a["iscrowd"]])
            assert 1 <= len(boxes) <= 4
            # [x, y, w, h] inside the image
            assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] > 0).all()
            assert (boxes[:, 0] + boxes[:, 2] <= info["width"]).all()
            assert (boxes[:, 1] + boxes[:, 3] <= info["height"]).all()
    sizes = np.array([max(a["bbox"][2:]) for a in train.dataset["annotations"]])
    assert sizes.min() < 16 and sizes.max() > 60  # small to large


def test_voc_tree_parses_and_matches_coco(toy_root):
    voc = toy_root / "toy" / "voc" / "VOC2007"
    coco = _coco(toy_root / "toy/coco/annotations/instances_val.json")
    ids = (voc / "ImageSets/Main/test.txt").read_text().split()
    assert len(ids) == len(coco.getImgIds())
    difficult_total = 0
    for image in coco.loadImgs(coco.getImgIds()):
        stem = os.path.splitext(image["file_name"])[0]
        assert stem in ids
        root = ET.parse(voc / "Annotations" / f"{stem}.xml").getroot()
        assert int(root.find("size/width").text) == image["width"]
        objects = root.findall("object")
        difficult_total += sum(o.find("difficult").text == "1" for o in objects)
        voc_boxes = np.array([[int(o.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax")]
                              for o in objects])
        coco_boxes = np.array([a["bbox"] for a in coco.imgToAnns[image["id"]]])
        # devkit: 1-based inclusive pixels; COCO: continuous [x, y, w, h]
        np.testing.assert_array_equal(voc_boxes[:, 0] - 1, coco_boxes[:, 0])
        np.testing.assert_array_equal(voc_boxes[:, 2], coco_boxes[:, 0] + coco_boxes[:, 2])
    assert difficult_total > 0
    assert (voc / "JPEGImages" / f"{ids[0]}.jpg").is_file()


def test_catalog_names_load(toy_env):
    assert len(DatasetCatalog.get("toy_cls_train")) == 10 * 1000
    assert len(DatasetCatalog.get("toy_cls_val")) == 10 * 100
    assert len(DatasetCatalog.get("toy_coco_train")) == len(DatasetCatalog.get("toy_voc_trainval"))
    assert len(DatasetCatalog.get("toy_coco_val")) == len(DatasetCatalog.get("toy_voc_test"))
    detection = ["toy_coco_val", "toy_voc_test"]
    assert len({tuple(MetadataCatalog.get(n).thing_classes) for n in detection}) == 1
    detection_classes = set(MetadataCatalog.get("toy_coco_val").thing_classes)
    assert detection_classes < set(MetadataCatalog.get("toy_cls_train").thing_classes)
    names = ["toy_cls_train", *detection]
    assert [MetadataCatalog.get(n).evaluator_type for n in names] == ["classification", "coco", "voc"]
