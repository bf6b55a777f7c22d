"""RecordStore: every record field round-trips exactly (types included), in memory and through its file; the
COCO store equals pycocotools' reading of the json; spawned workers map the file instead of copying it."""
import pickle

import numpy as np
import pytest
from pycocotools.coco import COCO
from torch.utils.data import DataLoader

from resdet.data.build import MapDataset, collate_list, images_with_boxes, portrait_flags
from resdet.data.datasets import DatasetCatalog
from resdet.data.mappers import training_targets
from resdet.data.record_store import ConcatRecords, RecordStore, StoreFileError, open_store


def assert_same(a, b, where="record"):
    """Equal values of equal types, recursively (1 == 1.0 == True would pass a plain ==)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} vs {type(b).__name__}"
    if isinstance(a, dict):
        assert list(a) == list(b) or set(a) == set(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{index}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b), where
    elif isinstance(a, float) and a != a:
        assert b != b, where
    else:
        assert a == b, where


ODD_RECORDS = [
    {"file_name": "a/\u00e9t\u00e9.jpg", "image_id": 2**62, "height": 3, "width": 4, "score": -0.0,
     "flag": True, "annotations": [{"bbox": [0.5, 1.0, 2.0, 3.0], "category_id": 0, "iscrowd": 0},
                                   {"bbox": [1e-300, 2.0, float("inf"), 3.0], "category_id": 2, "iscrowd": 1,
                                    "segmentation": [[1, 2, 3]]}],
     "image": np.arange(12, dtype=np.uint8).reshape(2, 2, 3), "mixed": 1},
    {"file_name": "", "image_id": -1, "height": 5, "width": 1, "score": float("nan"), "flag": False,
     "annotations": [], "image": np.zeros((2, 2, 3), dtype=np.uint8), "mixed": 2.5, "extra": ("only", "here")},
    {"file_name": "c\udc80.png", "image_id": 0, "height": 1, "width": 9, "score": 1e308, "flag": True,
     "annotations": [{"bbox": [0.0, 0.0, 1.0, 1.0], "category_id": 1, "iscrowd": 0}],
     "image": np.ones((2, 2, 3), dtype=np.uint8), "mixed": 2**70},
]


def test_odd_records_round_trip_with_their_types():
    store = RecordStore.from_records(ODD_RECORDS)
    assert len(store) == 3 and store.has_pickled_fields()  # "mixed", "extra" and "segmentation" pickled
    for index, record in enumerate(ODD_RECORDS):
        assert_same(record, store[index], f"record {index}")
        assert_same(record, store[index - 3], f"record {index - 3}")
    assert_same(ODD_RECORDS, list(store))
    assert_same(ODD_RECORDS, list(pickle.loads(pickle.dumps(store))))
    assert_same(ODD_RECORDS[1:], list(store[1:])) and assert_same(ODD_RECORDS[::-1], list(store[::-1]))
    assert_same(ODD_RECORDS[2], store[1:][1])
    with pytest.raises(IndexError):
        store[3]
    with pytest.raises(ValueError, match="pickled"):
        store.save("unused")


def test_typed_records_round_trip_through_a_file(tmp_path):
    records = [{k: v for k, v in dict(r, mixed=index).items() if k != "extra"} for index, r in enumerate(ODD_RECORDS)]
    for record in records:
        record["annotations"] = [{k: v for k, v in a.items() if k != "segmentation"} for a in record["annotations"]]
    store = RecordStore.from_records(records, meta={"note": "kept"})
    assert not store.has_pickled_fields()  # every field typed: the store can be written
    path = str(tmp_path / "records.store")
    store.save(path)
    mapped = open_store(path)
    assert mapped.meta == {"note": "kept"} and mapped.path == path
    assert_same(records, list(mapped))
    assert not mapped.arrays["annotations/bbox"].flags.writeable  # a read-only map: reading never copies pages
    assert len(pickle.dumps(mapped)) < 500  # travels to spawned workers as its path
    assert_same(records, list(pickle.loads(pickle.dumps(mapped))))
    picked = mapped.select(np.array([2, 0]))
    assert_same([records[2], records[0]], list(picked))
    assert_same([records[2], records[0]], list(pickle.loads(pickle.dumps(picked))))


@pytest.mark.parametrize("cut", [0, 7, 20, -1])
def test_an_incomplete_or_foreign_file_is_refused(tmp_path, cut):
    path = str(tmp_path / "whole.store")
    RecordStore.from_records([{"file_name": "x.jpg", "label": 3}] * 10).save(path)
    data = open(path, "rb").read()
    broken = tmp_path / "broken.store"
    broken.write_bytes(data[:cut] if cut >= 0 else data[:-1])
    with pytest.raises(StoreFileError):
        open_store(str(broken))
    broken.write_bytes(b"not a store at all")
    with pytest.raises(StoreFileError, match="not a resdet record store"):
        open_store(str(broken))


def test_toy_datasets_round_trip(toy_env, tmp_path):
    for name in ("toy_coco_train", "toy_voc_test", "toy_cls_val"):
        store = DatasetCatalog.get_records(name)
        records = DatasetCatalog.get(name)
        assert isinstance(records, list) and len(records) == len(store) > 0
        rebuilt = RecordStore.from_records(records)
        assert_same(records, list(rebuilt), name)
        path = str(tmp_path / f"{name}.store")
        rebuilt.save(path)
        assert_same(records, list(open_store(path)), name)


def test_coco_store_equals_pycocotools(toy_env):
    """Each record is what pycocotools reads from the json: sizes, file, xywh -> xyxy boxes, crowd, classes."""
    store = DatasetCatalog.get_records("toy_coco_val")
    assert store.path is not None  # mapped from its cache file
    json_file = toy_env / "toy" / "coco" / "annotations" / "instances_val.json"
    coco = COCO(str(json_file))
    category_ids = sorted(coco.getCatIds())
    assert [r["image_id"] for r in store] == sorted(coco.getImgIds())
    for record in store:
        image = coco.loadImgs(record["image_id"])[0]
        assert (record["height"], record["width"]) == (image["height"], image["width"])
        assert record["file_name"].endswith(image["file_name"])
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=record["image_id"]))
        expected = [([x, y, x + w, y + h], category_ids.index(a["category_id"]), a["iscrowd"])
                    for a in annotations for x, y, w, h in [a["bbox"]]]
        got = [(a["bbox"], a["category_id"], a["iscrowd"]) for a in record["annotations"]]
        assert len(got) == len(expected)
        for (box, cls, crowd), (want_box, want_cls, want_crowd) in zip(got, expected):
            np.testing.assert_allclose(box, np.clip(want_box, 0, [image["width"], image["height"]] * 2), atol=1e-9)
            assert (cls, crowd) == (want_cls, want_crowd)


def test_vectorised_filters_equal_the_per_record_rule(toy_env):
    records = [
        {"file_name": "a", "image_id": 1, "height": 10, "width": 5, "annotations": []},
        {"file_name": "b", "image_id": 2, "height": 5, "width": 10, "annotations": [
            {"bbox": [0.0, 0.0, 1.0, 1.0], "category_id": 0, "iscrowd": 1, "difficult": False}]},
        {"file_name": "c", "image_id": 3, "height": 5, "width": 5, "annotations": [
            {"bbox": [0.0, 0.0, 1.0, 1.0], "category_id": 0, "iscrowd": 0, "difficult": True},
            {"bbox": [0.0, 0.0, 2.0, 2.0], "category_id": 1, "iscrowd": 0, "difficult": False}]},
        {"file_name": "d", "image_id": 4, "height": 5, "width": 5, "annotations": [
            {"bbox": [0.0, 0.0, 1.0, 1.0], "category_id": 0, "iscrowd": 0, "difficult": True}]},
    ]
    for store in (RecordStore.from_records(records), DatasetCatalog.get_records("toy_voc_test"),
                  DatasetCatalog.get_records("toy_coco_train")):
        as_list = list(store)
        expected = [len(training_targets(r)[1]) > 0 for r in as_list]
        assert images_with_boxes(store).tolist() == expected == images_with_boxes(as_list).tolist()
        assert portrait_flags(store).tolist() == [int(r["height"] > r["width"]) for r in as_list]
    assert images_with_boxes(RecordStore.from_records(records)).tolist() == [False, False, True, False]
    both = ConcatRecords([RecordStore.from_records(records), RecordStore.from_records(records[:2])])
    assert len(both) == 6 and both[4]["file_name"] == "a" and both[-1]["file_name"] == "b"
    assert portrait_flags(both).tolist() == [1, 0, 0, 0, 1, 0]


def _first_record_name(record, rng):
    return record["file_name"], len(record["annotations"])


def test_spawned_workers_read_the_mapped_store(toy_env):
    store = DatasetCatalog.get_records("toy_coco_val")
    dataset = MapDataset(store, _first_record_name)
    assert len(pickle.dumps(dataset)) < 2000  # what each spawned worker receives: the store's path, not its records
    loader = DataLoader(dataset, batch_size=None, num_workers=2, multiprocessing_context="spawn",
                        collate_fn=collate_list)
    assert list(loader) == [(r["file_name"], len(r["annotations"])) for r in store]
