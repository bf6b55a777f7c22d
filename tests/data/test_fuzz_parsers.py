"""Fuzzing the dataset parsers: random and mutated COCO JSON, VOC XML, CIFAR batches and image bytes either load
into well-formed dataset dicts or raise resdet's DataError (UnsafePickleError for a pickle); nothing else escapes."""
import copy
import itertools
import json
import math
import pickle

import cv2
import numpy as np
import pytest
from fuzzing import FUZZ, edited_bytes, nested
from hypothesis import given
from hypothesis import strategies as st

from resdet.checkpoint.safe_pickle import UnsafePickleError
from resdet.data import DatasetCatalog, MetadataCatalog, register_coco_instances, register_voc
from resdet.data.datasets.cifar import read_batch
from resdet.data.errors import DataError, UnreadableImageError
from resdet.data.image_io import jpeg_is_complete, read_image

_names = itertools.count()

SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=6))
JSON_VALUES = nested(SCALARS)
# values near the valid ones reach deeper into the parsers than arbitrary JSON does
PLAUSIBLE = (st.integers(-3, 4) | st.floats(-1e3, 1e3) | st.sampled_from(["a", "", "1", "a.jpg", 0.5])
             | st.lists(st.integers(-50, 300) | st.floats(-1e6, 1e6) | st.just(math.nan), max_size=5))

COCO = {
    "images": [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60},
               {"id": 2, "file_name": "b.jpg", "height": 30, "width": 20}],
    "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 20], "iscrowd": 0},
                    {"id": 2, "image_id": 2, "category_id": 7, "bbox": [5.5, 0, 14.5, 30], "iscrowd": 1},
                    {"id": 3, "image_id": 1, "category_id": 7, "bbox": [50, 30, 20, 20]}],
    "categories": [{"id": 1, "name": "a"}, {"id": 7, "name": "b"}],
}


def check_detection_dicts(dicts, num_classes):
    """The invariants every consumer of detection dicts relies on."""
    assert dicts
    for record in dicts:
        height, width = record["height"], record["width"]
        assert isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0
        assert isinstance(record["file_name"], str)
        for ann in record["annotations"]:
            x1, y1, x2, y2 = ann["bbox"]
            assert all(math.isfinite(v) for v in ann["bbox"])
            assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height
            assert 0 <= ann["category_id"] < num_classes and ann["iscrowd"] in (0, 1)


@st.composite
def mutated_coco(draw):
    """The valid COCO dict above with 1-4 entries or fields replaced, deleted or added."""
    data = copy.deepcopy(COCO)
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(["images", "annotations", "categories", "top"]))
        if section == "top":
            key = draw(st.sampled_from(["images", "annotations", "categories"]))
            if draw(st.booleans()):
                data.pop(key, None)
            else:
                data[key] = draw(JSON_VALUES)
            continue
        entries = data.get(section)
        if not isinstance(entries, list) or not entries:
            continue
        index = draw(st.integers(0, len(entries) - 1))
        if not isinstance(entries[index], dict) or draw(st.integers(0, 5)) == 0:
            entries[index] = draw(JSON_VALUES)
            continue
        key = draw(st.sampled_from(sorted(entries[index]) + ["extra"]))
        if draw(st.integers(0, 3)) == 0:
            entries[index].pop(key, None)
        else:
            entries[index][key] = draw(PLAUSIBLE | JSON_VALUES)
    return data


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def load_coco_file(folder, content: bytes):
    path = folder / "instances.json"
    path.write_bytes(content)
    name = f"fuzz_coco_{next(_names)}"
    register_coco_instances(name, str(path), str(folder))
    try:
        dicts = DatasetCatalog.get(name)
        check_detection_dicts(dicts, len(MetadataCatalog.get(name).thing_classes))
    except DataError:
        pass
    finally:
        DatasetCatalog.remove(name)


@FUZZ
@given(data=mutated_coco())
def test_coco_mutated_json(folder, data):
    load_coco_file(folder, json.dumps(data).encode())


@FUZZ
@given(data=st.dictionaries(st.sampled_from(["images", "annotations", "categories", "info"]), JSON_VALUES)
       | JSON_VALUES)
def test_coco_random_json(folder, data):
    load_coco_file(folder, json.dumps(data).encode())


@FUZZ
@given(content=edited_bytes(json.dumps(COCO).encode()) | st.binary(max_size=64))
def test_coco_edited_bytes(folder, content):
    load_coco_file(folder, content)


VOC_XML = (b"<annotation><size><width>60</width><height>40</height><depth>3</depth></size>"
           b"<object><name>a</name><difficult>0</difficult><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>11</xmax>"
           b"<ymax>23</ymax></bndbox></object><object><name>b</name><difficult>1</difficult><bndbox><xmin>50</xmin>"
           b"<ymin>30</ymin><xmax>70</xmax><ymax>50</ymax></bndbox></object></annotation>")
XML_PIECES = st.sampled_from([b"<", b">", b"</", b"&amp;", b"&bogus;", b"<object>", b"<name>b</name>", b"-5", b"1e999",
                              b"nan", b"<!DOCTYPE a [<!ENTITY e 'x'>]>", b"\xff\xfe", b"<?xml version='1.0'?>"])


@st.composite
def voc_xml(draw):
    """The valid annotation above with XML-ish pieces inserted, or bytes edited, or random bytes."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        data = VOC_XML
        for _ in range(draw(st.integers(1, 3))):
            position = draw(st.integers(0, len(data)))
            data = data[:position] + draw(XML_PIECES) + data[position + draw(st.integers(0, 6)):]
        return data
    return draw(edited_bytes(VOC_XML)) if choice == 1 else draw(st.binary(max_size=64))


@FUZZ
@given(first=voc_xml(), second=voc_xml(),
       ids=st.sampled_from([b"000001\n000002\n", b"000001\n\n000002", b"000001\n../x\n", b"\xff\xfe\n", b"a\x00b\n"]))
def test_voc_mutated_xml_and_list(folder, first, second, ids):
    root = folder / "VOC2007"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "Annotations/000001.xml").write_bytes(first)
    (root / "Annotations/000002.xml").write_bytes(second)
    (root / "ImageSets/Main/train.txt").write_bytes(ids)
    name = f"fuzz_voc_{next(_names)}"
    register_voc(name, str(root), "train", ["a", "b"])
    try:
        check_detection_dicts(DatasetCatalog.get(name), 2)
    except DataError:
        pass
    finally:
        DatasetCatalog.remove(name)


def _valid_images():
    image = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    return [cv2.imencode(ext, image)[1].tobytes() for ext in (".jpg", ".png", ".bmp")]


VALID_IMAGES = _valid_images()


@FUZZ
@given(content=st.sampled_from(VALID_IMAGES).flatmap(edited_bytes) | st.binary(max_size=64)
       | st.binary(max_size=64).map(lambda tail: b"\xff\xd8" + tail))
def test_image_bytes(folder, content):
    path = folder / "image.jpg"
    path.write_bytes(content)
    jpeg_is_complete(np.frombuffer(content, np.uint8))  # never raises, whatever the bytes
    try:
        image = read_image(str(path), "RGB")
    except UnreadableImageError as err:
        assert str(path) in str(err)
        return
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


def _cifar_batch(rows=2):
    return {b"data": np.zeros((rows, 3072), np.uint8), b"labels": [3] * rows, b"batch_label": b"fuzz"}


BATCH_VALUES = (JSON_VALUES | st.builds(np.zeros, st.tuples(st.integers(0, 3), st.sampled_from([0, 1, 3072])),
                                        st.sampled_from([np.uint8, np.int64, np.float32])))


@st.composite
def cifar_pickles(draw):
    """Pickles of a valid batch with edited bytes, or of batches with fields replaced by other values."""
    if draw(st.booleans()):
        return draw(edited_bytes(pickle.dumps(_cifar_batch(), protocol=2)))
    batch = _cifar_batch(draw(st.integers(0, 3)))
    key = draw(st.sampled_from([b"data", b"labels", "data", b"other"]))
    batch[key] = draw(BATCH_VALUES)
    return pickle.dumps(draw(st.sampled_from([batch, [batch], batch[key]])), protocol=draw(st.integers(2, 5)))


@FUZZ
@given(content=cifar_pickles())
def test_cifar_batch_pickles(folder, content):
    path = folder / "data_batch_1"
    path.write_bytes(content)
    try:
        images, labels = read_batch("fuzz_cifar", str(path))
    except (DataError, UnsafePickleError):
        return
    assert images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3) and labels.shape == images.shape[:1]
    assert ((labels >= 0) & (labels < 10)).all()
