"""tools/visualize_data.py: the annotated boxes are drawn where the COCO json puts them, in their class colour; the
training loader's view (spawn-started worker) is the augmented image at a training size; a classifier's too."""
import json
import os
import runpy

import cv2
import numpy as np
import pytest
import yaml

from resdet.utils.visualizer import class_colour

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
tool = runpy.run_path(os.path.join(REPO, "tools", "visualize_data.py"))
DET_CONFIG = os.path.join(REPO, "configs", "toy_frcnn_r18_fpn.yaml")


@pytest.fixture
def datasets(toy_datasets, monkeypatch):
    monkeypatch.setenv("RESDET_DATASETS", str(toy_datasets))
    return toy_datasets


def test_annotations_drawn_where_the_json_puts_them(datasets, tmp_path):
    written = tool["main"](["--config", DET_CONFIG, "--output", str(tmp_path), "--num-images", "2"])
    assert written == 0
    coco = json.load(open(os.path.join(str(datasets), "toy", "coco", "annotations", "instances_train.json")))
    first_images = sorted(coco["images"], key=lambda image: image["id"])[:2]
    order = sorted(c["id"] for c in coco["categories"])
    files = sorted(os.listdir(tmp_path))
    assert len(files) == 2
    for image, name in zip(first_images, files):
        assert os.path.splitext(image["file_name"])[0] in name
        drawn = cv2.imread(str(tmp_path / name))
        assert drawn.shape[:2] == (image["height"], image["width"])
        for annotation in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = annotation["bbox"]
            # the outline's left edge, halfway down the box (below any name tag): the class's colour
            row, col = int(round(y + h / 2)), int(round(x))
            colour = class_colour(order.index(annotation["category_id"]))
            assert tuple(int(v) for v in drawn[row, col]) == colour, (name, annotation)


def test_dataloader_view_with_spawned_workers(datasets, tmp_path, capsys):
    cfg = yaml.safe_load(open(DET_CONFIG))
    sizes = [int(s) for s in cfg["INPUT"]["MIN_SIZE_TRAIN"].strip("()").split(",") if s.strip()]
    tool["main"](["--config", DET_CONFIG, "--source", "dataloader", "--output", str(tmp_path), "--num-images", "3",
                  "DATALOADER.NUM_WORKERS", "1", "DATALOADER.START_METHOD", "spawn"])
    assert "3 images (dataloader)" in capsys.readouterr().out
    for name in sorted(os.listdir(tmp_path)):
        drawn = cv2.imread(str(tmp_path / name))
        assert min(drawn.shape[:2]) in sizes, (name, drawn.shape)  # resized to a training size
        colours = {class_colour(label) for label in range(4)}
        assert any(np.all(drawn == colour, axis=-1).any() for colour in colours), name  # some box is drawn


def test_classifier_images_named_and_bad_count_refused(datasets, tmp_path):
    config = os.path.join(REPO, "configs", "toy_cls_r18.yaml")
    tool["main"](["--config", config, "--output", str(tmp_path), "--num-images", "2", "--min-side", "128"])
    drawn = [cv2.imread(str(tmp_path / name)) for name in sorted(os.listdir(tmp_path))]
    assert len(drawn) == 2 and all(min(image.shape[:2]) == 128 for image in drawn)
    with pytest.raises(Exception, match="--num-images 0"):
        tool["main"](["--config", config, "--output", str(tmp_path), "--num-images", "0"])
