"""Malformed COCO and VOC annotations: dropped or clipped with one warning that counts and names them,
or rejected with a DataError naming the file and entry."""
import itertools
import json
import logging

import pytest

from resdet.data import DatasetCatalog, register_coco_instances, register_voc
from resdet.data.datasets.issues import (
    CLIPPED_ANNOTATIONS,
    DROPPED_ANNOTATIONS,
    DROPPED_IMAGES,
    dataset_issues,
)
from resdet.data.datasets.voc import parse_voc_xml
from resdet.data.errors import DataError, DatasetNotRegisteredError
from resdet.errors import UserError

_names = itertools.count()
CATEGORIES = [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]
GOOD_IMAGE = {"id": 1, "file_name": "1.jpg", "height": 100, "width": 200}


def _ann(ann_id, bbox, category_id=1, image_id=1, **extra):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


@pytest.fixture
def load_coco(tmp_path):
    """load_coco(json object, text or bytes) -> (dicts, issues), through the catalog as training loads it."""
    registered = []

    def load(content):
        path = tmp_path / f"instances_{len(registered)}.json"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
        name = f"test_bad_coco_{next(_names)}"
        registered.append(name)
        register_coco_instances(name, str(path), str(tmp_path))
        return DatasetCatalog.get(name), dataset_issues(name)

    yield load
    for name in registered:
        DatasetCatalog.remove(name)


def test_coco_malformed_annotations_dropped_or_clipped_with_one_warning(load_coco, caplog):
    annotations = [
        _ann(1, [10, 20, 30, 40]),  # good
        _ann(2, [10, 20, 30, 40], category_id=999),  # the KeyError: 999 of the issue
        _ann(3, [10, 20, 0, 40]),  # zero width
        _ann(4, [10, 20, 30, -5]),  # negative height
        _ann(5, [190, 90, 30, 40]),  # crosses the border: clipped to [190, 90, 200, 100]
        _ann(6, [300, 20, 30, 40]),  # wholly outside
        _ann(7, [1, 2, 3, 4], image_id=42),  # image not listed
        {"id": 8, "image_id": 1, "category_id": 1},  # no bbox
        _ann(9, [1, 2, "3", 4]),  # not numbers
        _ann(10, [1, 2, 3]),  # three numbers
        _ann(11, [200.5, 0, 10, 10]),  # 0.5 px past the border: clipped silently, then empty -> outside
        _ann(12, [199.5, 0, 1.0, 10]),  # 0.5 px past the border: clipped without a report
        "not an object",
    ]
    data = {"images": [GOOD_IMAGE], "annotations": annotations, "categories": CATEGORIES}
    with caplog.at_level(logging.WARNING, logger="resdet.data"):
        (record,), issues = load_coco(data)
    assert [a["bbox"] for a in record["annotations"]] == [[10, 20, 40, 60], [190, 90, 200, 100], [199.5, 0, 200, 10]]
    counts = issues.counts()
    assert counts == {
        (DROPPED_ANNOTATIONS, "category_id not in 'categories'"): 1,
        (DROPPED_ANNOTATIONS, "zero or negative width or height"): 2,
        (CLIPPED_ANNOTATIONS, "bbox crosses the image border"): 1,
        (DROPPED_ANNOTATIONS, "bbox wholly outside the image"): 2,
        (DROPPED_ANNOTATIONS, "image_id not among the usable 'images'"): 1,
        (DROPPED_ANNOTATIONS, "no 'bbox'"): 1,
        (DROPPED_ANNOTATIONS, "bbox is not [x, y, width, height]"): 2,
        (DROPPED_ANNOTATIONS, "not a JSON object"): 1,
    }
    assert issues.total(DROPPED_ANNOTATIONS) == 10 and issues.total(CLIPPED_ANNOTATIONS) == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one warning for the dataset, not one per annotation
    message = warnings[0].getMessage()
    assert "instances_0.json" in message
    assert "annotations[1] (id 2, image 1)" in message and "'category_id': 999" in message
    assert "annotations[4] (id 5, image 1) bbox [190, 90, 30, 40] in a 200x100 image" in message


def test_coco_malformed_images_dropped(load_coco):
    images = [GOOD_IMAGE,
              {"id": 2, "file_name": "2.jpg", "height": 0, "width": 10},
              {"id": 3, "file_name": "3.jpg", "width": 10},
              {"id": 1, "file_name": "again.jpg", "height": 10, "width": 10},
              {"id": "4", "file_name": "4.jpg", "height": 10, "width": 10},
              {"id": 5, "height": 10, "width": 10},
              {"id": 6, "file_name": "6.jpg", "height": 480.0, "width": 640.0}]  # integral floats are fine
    data = {"images": images, "categories": CATEGORIES,
            "annotations": [_ann(1, [0, 0, 5, 5], image_id=2), _ann(2, [0, 0, 5, 5], image_id=6)]}
    dicts, issues = load_coco(data)
    assert [(d["image_id"], d["height"], d["width"]) for d in dicts] == [(1, 100, 200), (6, 480, 640)]
    assert dicts[1]["annotations"][0]["bbox"] == [0, 0, 5, 5]
    assert issues.counts() == {
        (DROPPED_IMAGES, "no positive integer 'height' and 'width'"): 2,
        (DROPPED_IMAGES, "image id listed twice"): 1,
        (DROPPED_IMAGES, "no integer 'id'"): 1,
        (DROPPED_IMAGES, "no 'file_name'"): 1,
        (DROPPED_ANNOTATIONS, "image_id not among the usable 'images'"): 1,  # its image was dropped
    }
    assert "images[3]" in issues.items(DROPPED_IMAGES, "image id listed twice")[0]


@pytest.mark.parametrize("content, match", [
    ('{"images": [', r"instances_0\.json: not valid JSON: .* line 1, column 13"),
    ("[1, 2]", r"instances_0\.json: expected a COCO instances JSON object"),
    ('{"annotations": []}', r"instances_0\.json: no 'images' list"),
    ('{"images": {}, "categories": []}', r"instances_0\.json: 'images' must be a list"),
    ('{"images": [], "categories": []}', r"instances_0\.json: 'categories' is empty"),
    ('{"images": [], "categories": [{"id": 1}]}', r"categories\[0\] needs an integer 'id' and a string 'name'"),
    ('{"images": [], "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}',
     r"categories\[1\]: category id 1 appears twice"),
    ('{"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}]}', r"instances_0\.json lists no usable image"),
])
def test_coco_unusable_file_rejected(load_coco, content, match):
    with pytest.raises(DataError, match=match) as info:
        load_coco(content)
    assert isinstance(info.value, UserError)


def test_coco_bytes_that_are_not_text_rejected(load_coco):
    with pytest.raises(DataError, match="not valid JSON"):
        load_coco(b'{"images": [], "\xff\xfe": 1}')


def test_unknown_dataset_name_is_a_user_error_and_a_key_error():
    with pytest.raises(DatasetNotRegisteredError, match="'no_such_dataset' is not registered") as info:
        DatasetCatalog.get("no_such_dataset")
    assert isinstance(info.value, KeyError) and isinstance(info.value, UserError)


VOC_XML = """<annotation><size><width>{width}</width><height>{height}</height></size>{objects}</annotation>"""
VOC_OBJECT = ("<object><name>{name}</name><difficult>0</difficult><bndbox><xmin>{box[0]}</xmin><ymin>{box[1]}</ymin>"
              "<xmax>{box[2]}</xmax><ymax>{box[3]}</ymax></bndbox></object>")


def _voc_xml(objects, width=100, height=50):
    return VOC_XML.format(width=width, height=height,
                          objects="".join(VOC_OBJECT.format(name=n, box=b) for n, b in objects))


@pytest.fixture
def voc_tree(tmp_path):
    """write(files: {image id: xml text or None (no file)}) -> registered dataset name of a VOC tree listing them."""
    registered = []

    def write(files):
        root = tmp_path / f"VOC{len(registered)}"
        for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
            (root / sub).mkdir(parents=True)
        for image_id, xml in files.items():
            if xml is not None:
                (root / "Annotations" / f"{image_id}.xml").write_text(xml)
        (root / "ImageSets/Main/train.txt").write_text("".join(f"{i}\n" for i in files))
        name = f"test_bad_voc_{next(_names)}"
        register_voc(name, str(root), "train", ["cat", "dog"])
        registered.append(name)
        return name

    yield write
    for name in registered:
        DatasetCatalog.remove(name)


def test_voc_malformed_files_and_objects(voc_tree, caplog):
    name = voc_tree({
        "good": _voc_xml([("cat", (1, 1, 10, 10)),
                          ("bird", (1, 1, 10, 10)),  # unknown class
                          ("dog", (20, 5, 10, 30)),  # xmax < xmin
                          ("dog", (90, 40, 120, 60)),  # crosses the border: clipped to [89, 39, 100, 50]
                          ("dog", (150, 1, 160, 10)),  # wholly outside
                          ("cat", ("a", 1, 10, 10))]),  # not a number
        "missing": None,
        "broken": "<annotation><size>",
        "nosize": _voc_xml([("cat", (1, 1, 10, 10))]).replace("<height>50</height>", ""),
    })
    with caplog.at_level(logging.WARNING, logger="resdet.data"):
        (record,) = DatasetCatalog.get(name)
    assert record["image_id"] == "good"
    assert [a["bbox"] for a in record["annotations"]] == [[0, 0, 10, 10], [89, 39, 100, 50]]
    assert [a["category_id"] for a in record["annotations"]] == [0, 1]
    issues = dataset_issues(name)
    assert issues.counts() == {
        (DROPPED_IMAGES, "annotation file missing"): 1,
        (DROPPED_IMAGES, "not well-formed XML"): 1,
        (DROPPED_IMAGES, "no positive integer <size> <width> and <height>"): 1,
        (DROPPED_ANNOTATIONS, "class not one of ['cat', 'dog']"): 1,
        (DROPPED_ANNOTATIONS, "no numeric <bndbox> xmin, ymin, xmax, ymax"): 1,
        (DROPPED_ANNOTATIONS, "zero or negative width or height"): 1,
        (DROPPED_ANNOTATIONS, "bbox wholly outside the image"): 1,
        (CLIPPED_ANNOTATIONS, "bbox crosses the image border"): 1,
    }
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = warning.getMessage()
    assert "missing.xml" in message and "broken.xml" in message and "nosize.xml" in message
    assert "good.xml object 1 'bird'" in message
    assert "good.xml object 3 'dog' bndbox [90.0, 40.0, 120.0, 60.0] in a 100x50 image" in message


def test_voc_nothing_usable_rejected(voc_tree):
    name = voc_tree({"a": None, "b": "not xml"})
    with pytest.raises(DataError, match=r"train\.txt lists no usable image(.|\n)*a\.xml"):
        DatasetCatalog.get(name)


def test_parse_voc_xml_alone_raises_naming_file_and_object(tmp_path):
    path = tmp_path / "000007.xml"
    path.write_text(_voc_xml([("cat", (1, 1, 10, 10)), ("dog", (5, 5, 1, 1))]))
    with pytest.raises(DataError, match=r"000007\.xml object 1 'dog' bndbox .*: zero or negative width or height"):
        parse_voc_xml(str(path), ["cat", "dog"])
    path.write_text("<annotation>")
    with pytest.raises(DataError, match=r"000007\.xml: .*not well-formed XML"):
        parse_voc_xml(str(path), ["cat", "dog"])
