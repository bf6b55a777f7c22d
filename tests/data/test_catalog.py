"""The catalog: names resolved under $RESDET_DATASETS when requested, config-only names, missing datasets."""
import json
import os

import pytest

from resdet.data import DataError, DatasetCatalog, DatasetNotFoundError, MetadataCatalog

BUILTIN = (
    ["imagenet_train", "imagenet_val", "cifar10_train", "cifar10_train45k", "cifar10_val5k", "cifar10_test"]
    + [f"toy_{n}" for n in ("cls_train", "cls_val", "coco_train", "coco_val", "voc_trainval", "voc_test")]
    + ["coco_2017_train", "coco_2017_val"]
    + [f"voc_{y}_{s}" for y in (2007, 2012) for s in ("trainval", "train", "val", "test")]
)


def test_builtin_names_registered():
    assert set(BUILTIN) <= set(DatasetCatalog.list())


@pytest.mark.parametrize("name,relative", [
    ("cifar10_train", "cifar10/cifar-10-batches-py"),
    ("imagenet_val", "imagenet/val"),
    ("coco_2017_val", "coco/annotations/instances_val2017.json"),
    ("voc_2007_test", "VOC2007"),
    ("toy_coco_train", "toy/coco/annotations/instances_train.json"),
])
def test_missing_dataset_names_path_and_readme(tmp_path, monkeypatch, name, relative):
    monkeypatch.setenv("RESDET_DATASETS", str(tmp_path))  # set after import: the root is read on request
    with pytest.raises(DatasetNotFoundError) as info:
        DatasetCatalog.get(name)
    assert isinstance(info.value, FileNotFoundError)
    assert os.path.join(str(tmp_path), relative) in str(info.value)
    assert "see README section 'Datasets'" in str(info.value)


def test_metadata_paths_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RESDET_DATASETS", str(tmp_path / "a"))
    assert MetadataCatalog.get("coco_2017_val").json_file == str(tmp_path / "a/coco/annotations/instances_val2017.json")
    monkeypatch.setenv("RESDET_DATASETS", str(tmp_path / "b"))
    assert MetadataCatalog.get("voc_2012_trainval").dirname == str(tmp_path / "b/VOC2012")
    meta = MetadataCatalog.get("coco_2017_train")
    assert len(meta.thing_classes) == 80 and meta.thing_dataset_id_to_contiguous_id[90] == 79
    assert meta.evaluator_type == "coco" and MetadataCatalog.get("voc_2007_test").year == 2007


def test_unknown_name_lists_registered():
    with pytest.raises(KeyError, match="toy_coco_train"):
        DatasetCatalog.get("no_such_dataset")


def test_config_only_coco_and_voc_names(toy_env):
    toy = toy_env / "toy"
    coco_name = f"coco:{toy}/coco/annotations/instances_val.json:{toy}/coco/val"
    voc_name = f"voc:{toy}/voc/VOC2007:test"
    coco_dicts, voc_dicts = DatasetCatalog.get(coco_name), DatasetCatalog.get(voc_name)
    assert len(coco_dicts) == len(voc_dicts) == len(DatasetCatalog.get("toy_coco_val"))
    assert MetadataCatalog.get(coco_name).evaluator_type == "coco"
    assert MetadataCatalog.get(voc_name).thing_classes == MetadataCatalog.get(coco_name).thing_classes  # labels.txt
    assert MetadataCatalog.get(voc_name).split == "test"
    assert os.path.isfile(coco_dicts[0]["file_name"]) and os.path.isfile(voc_dicts[0]["file_name"])


def test_config_only_name_missing_file(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    empty = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "a.json").write_text(json.dumps(empty))
    with pytest.raises(DataError, match="a.json lists no usable image"):  # registered, read, and empty
        DatasetCatalog.get(f"coco:{tmp_path}/a.json:{images}")
    with pytest.raises(DatasetNotFoundError, match="missing.json"):
        DatasetCatalog.get(f"coco:{tmp_path}/missing.json:{images}")
    with pytest.raises(ValueError, match="coco:<json_file>:<image_root>"):
        DatasetCatalog.get("coco:only_one_part")


def test_lazy_metadata_retried_after_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("RESDET_DATASETS", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="imagenet/train"):
        _ = MetadataCatalog.get("imagenet_train").thing_classes
    for wnid in ("n02", "n01"):
        (tmp_path / "imagenet/train" / wnid).mkdir(parents=True)
        (tmp_path / "imagenet/train" / wnid / "x.JPEG").write_bytes(b"")
    assert MetadataCatalog.get("imagenet_train").thing_classes == ["n01", "n02"]
    assert [d["label"] for d in DatasetCatalog.get("imagenet_train")] == [0, 1]
    # another root (as a later job or test in the same process would use): its classes, not those read before
    other = tmp_path / "other"
    for wnid in ("n07", "n05", "n06"):
        (other / "imagenet/train" / wnid).mkdir(parents=True)
    monkeypatch.setenv("RESDET_DATASETS", str(other))
    assert MetadataCatalog.get("imagenet_train").thing_classes == ["n05", "n06", "n07"]
