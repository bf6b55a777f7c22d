"""COCO json -> dataset dicts: category id maps, [x,y,w,h] -> [x1,y1,x2,y2], crowd annotations."""
import json

import pytest

from resdet.data import DatasetCatalog, MetadataCatalog, register_coco_instances
from resdet.data.build import filter_empty
from resdet.data.mappers import training_targets

CATEGORIES = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "airplane"}]
IMAGES = [{"id": 7, "file_name": "a.jpg", "height": 100, "width": 200},
          {"id": 3, "file_name": "b.jpg", "height": 50, "width": 60}]
ANNOTATIONS = [
    {"id": 1, "image_id": 7, "category_id": 90, "bbox": [10, 20, 30, 40], "area": 1200, "iscrowd": 0},
    {"id": 2, "image_id": 7, "category_id": 5, "bbox": [0.5, 1.5, 2, 3], "area": 6, "iscrowd": 0},
    {"id": 3, "image_id": 7, "category_id": 1, "bbox": [50, 50, 100, 40], "area": 4000, "iscrowd": 1},
    {"id": 4, "image_id": 3, "category_id": 1, "bbox": [1, 1, 20, 20], "area": 400, "iscrowd": 1},
]


@pytest.fixture(scope="module")
def coco_name(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    path = root / "instances.json"
    path.write_text(json.dumps({"images": IMAGES, "annotations": ANNOTATIONS, "categories": CATEGORIES}))
    register_coco_instances("test_coco_handmade", str(path), str(root))
    return "test_coco_handmade"


def test_category_maps_round_trip(coco_name):
    meta = MetadataCatalog.get(coco_name)
    assert meta.thing_classes == ["person", "airplane", "toothbrush"]  # ascending category id
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 5: 1, 90: 2}
    for dataset_id, contiguous in meta.thing_dataset_id_to_contiguous_id.items():
        assert meta.thing_contiguous_id_to_dataset_id[contiguous] == dataset_id


def test_boxes_and_crowd(coco_name):
    dicts = {d["image_id"]: d for d in DatasetCatalog.get(coco_name)}
    assert sorted(dicts) == [3, 7]
    first = dicts[7]
    assert (first["height"], first["width"]) == (100, 200) and first["file_name"].endswith("a.jpg")
    assert [a["bbox"] for a in first["annotations"]] == [[10, 20, 40, 60], [0.5, 1.5, 2.5, 4.5], [50, 50, 150, 90]]
    assert [a["category_id"] for a in first["annotations"]] == [2, 1, 0]
    assert [a["iscrowd"] for a in first["annotations"]] == [0, 0, 1]
    boxes, labels = training_targets(first)
    assert boxes.tolist() == [[10, 20, 40, 60], [0.5, 1.5, 2.5, 4.5]] and labels.tolist() == [2, 1]
    # the image whose only annotation is a crowd has nothing to train on
    assert [d["image_id"] for d in filter_empty(list(dicts.values()))] == [7]


def test_ids_beyond_64_bits_are_dropped_with_their_reason(tmp_path, monkeypatch, caplog):
    """The fast column-wise checks hold ids as int64: larger ones take the per-entry path and are named."""
    monkeypatch.setenv("RESDET_CACHE", str(tmp_path / "cache"))
    images = IMAGES + [{"id": 2**70, "file_name": "c.jpg", "height": 5, "width": 5}]
    annotations = [dict(ANNOTATIONS[0], image_id=2**70), dict(ANNOTATIONS[1], category_id=2**80), ANNOTATIONS[3]]
    path = tmp_path / "huge.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    with caplog.at_level("WARNING"):
        records = DatasetCatalog.get(f"coco:{path}:{tmp_path}")
    assert [r["image_id"] for r in records] == [3, 7]
    assert [len(r["annotations"]) for r in records] == [1, 0]
    for reason in ("image id beyond 64 bits", "image_id not among the usable 'images'",
                   "category_id not in 'categories'"):
        assert reason in caplog.text
