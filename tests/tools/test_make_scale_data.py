"""tools/make_scale_data.py at a small size: the COCO json as pycocotools reads it, both sets through resdet's
loaders."""
import os
import subprocess
import sys

from pycocotools.coco import COCO

from resdet.data.datasets import DatasetCatalog, register_image_folder
from resdet.data.datasets.coco import COCO_CATEGORY_IDS
from resdet.data.image_io import read_image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_small_coco_and_imagenet_sets(tmp_path, monkeypatch):
    monkeypatch.setenv("RESDET_CACHE", str(tmp_path / "cache"))
    subprocess.run([sys.executable, "tools/make_scale_data.py", "--out", str(tmp_path), "--coco-images", "40",
                    "--coco-boxes", "300", "--imagenet-images", "1500", "--imagenet-val-per-class", "1"],
                   cwd=REPO, check=True, capture_output=True, timeout=300)
    json_file = tmp_path / "coco" / "annotations" / "instances_train.json"
    coco = COCO(str(json_file))
    assert len(coco.getImgIds()) == 40 and len(coco.getAnnIds()) == 300
    assert sorted(coco.getCatIds()) == COCO_CATEGORY_IDS
    records = DatasetCatalog.get(f"coco:{json_file}:{tmp_path / 'coco' / 'train'}")
    assert len(records) == 40 and sum(len(r["annotations"]) for r in records) == 300  # every box inside its image
    for record in records[:5]:  # each image a link to a real JPEG of the annotated size
        assert os.path.islink(record["file_name"])
        assert read_image(record["file_name"], "BGR").shape[:2] == (record["height"], record["width"])
    register_image_folder("scale_imagenet_train", str(tmp_path / "imagenet" / "train"))
    train = DatasetCatalog.get("scale_imagenet_train")
    assert len(train) == 1500 and len({r["label"] for r in train}) == 1000
    assert len(os.listdir(tmp_path / "imagenet" / "val")) == 1000
