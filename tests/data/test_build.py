"""Loaders on the toy data: shapes and types of the DEVELOPERS.md interfaces, sharding, grouping, filtering."""
import cv2
import numpy as np
import pytest
import torch

import resdet
from resdet.data import (
    DatasetCatalog,
    build_classification_test_loader,
    build_classification_train_loader,
    build_detection_test_loader,
    build_detection_train_loader,
)
from resdet.data import build as build_module


@pytest.fixture
def cfg(toy_env):
    c = resdet.get_cfg()
    c.SEED = 3
    c.SOLVER.IMS_PER_BATCH = 4
    c.DATALOADER.NUM_WORKERS = 0
    c.INPUT.SCALE_RANGE = (64, 80)
    c.INPUT.CROP.SIZE = 56
    c.INPUT.TEST_RESIZE = 64
    c.TEST.SCALES = (48, 64)
    c.INPUT.MIN_SIZE_TRAIN = (96, 112)
    c.INPUT.MAX_SIZE_TRAIN = 160
    return c


def _simulate_rank(monkeypatch, rank, world_size):
    monkeypatch.setattr(build_module.comm, "get_rank", lambda: rank)
    monkeypatch.setattr(build_module.comm, "get_world_size", lambda: world_size)


def test_classification_train_loader(cfg):
    cfg.DATASETS.TRAIN = ("toy_cls_train",)
    loader = build_classification_train_loader(cfg)
    images, labels = next(loader)
    assert images.shape == (4, 3, 56, 56) and images.dtype == torch.float32 and labels.dtype == torch.int64
    assert 0 <= labels.min() and labels.max() < 10 and images.max() > 100
    again_images, _ = next(iter(build_classification_train_loader(cfg)))
    torch.testing.assert_close(images, again_images)  # same SEED, same batch


def test_classification_train_loader_with_workers(cfg):
    cfg.DATASETS.TRAIN = ("toy_cls_train", "toy_cls_val")  # concatenated
    cfg.DATALOADER.NUM_WORKERS = 2
    cfg.INPUT.CLS_AUGMENTATION = "none"
    loader = build_classification_train_loader(cfg)
    assert len(loader.dataset) == 10 * (1000 + 100)
    batches = [next(loader) for _ in range(3)]
    assert all(b[0].shape == (4, 3, 56, 56) for b in batches)


@pytest.mark.parametrize("mode,shape", [("center", (4, 3, 56, 56)), ("ten_crop", (4, 10, 3, 56, 56))])
def test_classification_test_loader_modes(cfg, mode, shape):
    cfg.TEST.CLS_MODE = mode
    images, labels = next(iter(build_classification_test_loader(cfg, "toy_cls_val")))
    assert images.shape == shape and labels.shape == (4,)


def test_classification_colour_test_loader(cfg):
    """A TEST.CLS_COLOUR_TESTS loader holds the same images, changed by OpenCV's own conversions."""
    plain, labels = next(iter(build_classification_test_loader(cfg, "toy_cls_val")))
    gray, gray_labels = next(iter(build_classification_test_loader(cfg, "toy_cls_val", "grayscale")))
    assert torch.equal(labels, gray_labels)
    bgr = plain.permute(0, 2, 3, 1).numpy().astype(np.uint8)
    expected = np.stack([cv2.cvtColor(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) for im in bgr])
    np.testing.assert_array_equal(gray.permute(0, 2, 3, 1).numpy(), expected)


@pytest.mark.parametrize("colour_test", ["grayscale", "hue90"])
def test_colour_test_loader_with_spawned_workers(cfg, colour_test):
    """Workers started by spawn (macOS's default) receive the mapper by pickling: the same batch as in-process."""
    in_process = next(iter(build_classification_test_loader(cfg, "toy_cls_val", colour_test)))
    cfg.DATALOADER.NUM_WORKERS, cfg.DATALOADER.START_METHOD = 1, "spawn"
    spawned = next(iter(build_classification_test_loader(cfg, "toy_cls_val", colour_test)))
    assert torch.equal(in_process[0], spawned[0]) and torch.equal(in_process[1], spawned[1])


def test_unknown_start_method_names_the_key(cfg):
    cfg.DATALOADER.NUM_WORKERS, cfg.DATALOADER.START_METHOD = 1, "teleport"
    with pytest.raises(resdet.config.ConfigError, match="DATALOADER.START_METHOD: 'teleport'"):
        build_classification_test_loader(cfg, "toy_cls_val")


def test_classification_fully_conv(cfg):
    cfg.TEST.CLS_MODE = "fully_conv"
    images, labels = next(iter(build_classification_test_loader(cfg, "toy_cls_val")))
    assert [tuple(t.shape) for t in images] == [(1, 3, 48, 48), (1, 3, 64, 64)] and labels.shape == (1,)


def test_test_loader_shards_across_two_ranks(cfg, monkeypatch):
    seen = []
    for rank in range(2):
        _simulate_rank(monkeypatch, rank, 2)
        seen += [d["image_id"] for batch in build_detection_test_loader(cfg, "toy_coco_val") for d in batch]
    assert sorted(seen) == sorted(d["image_id"] for d in DatasetCatalog.get("toy_coco_val"))


def test_batch_not_divisible_names_key(cfg, monkeypatch):
    _simulate_rank(monkeypatch, 0, 3)
    cfg.DATASETS.TRAIN = ("toy_cls_train",)
    with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH"):
        build_classification_train_loader(cfg)


def test_detection_train_loader_grouping_and_boxes(cfg):
    cfg.DATASETS.TRAIN = ("toy_coco_train",)
    loader = build_detection_train_loader(cfg)
    for _ in range(4):
        batch = next(loader)
        assert len(batch) == 4
        assert len({d["height"] > d["width"] for d in batch}) == 1  # only landscape or only portrait
        for d in batch:
            _, height, width = d["image"].shape
            assert (height, width) == (d["height"], d["width"]) and min(height, width) in (96, 112)
            boxes = d["boxes"]
            assert boxes.shape == (len(d["labels"]), 4) and len(d["labels"]) > 0
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= width).all()


def test_detection_train_excludes_difficult_and_scales_boxes(cfg):
    cfg.DATASETS.TRAIN = ("toy_voc_test",)
    cfg.INPUT.MIN_SIZE_TRAIN = (256,)
    cfg.INPUT.MAX_SIZE_TRAIN = 10000
    cfg.INPUT.RANDOM_FLIP = "none"
    cfg.SOLVER.IMS_PER_BATCH = 1
    records = {r["image_id"]: r for r in DatasetCatalog.get("toy_voc_test")}
    loader = build_detection_train_loader(cfg)
    for _ in range(10):
        (d,) = next(loader)
        record = records[d["image_id"]]
        kept = [a for a in record["annotations"] if not a["difficult"]]
        scale = np.array([d["width"] / record["width"], d["height"] / record["height"]] * 2)
        np.testing.assert_allclose(d["boxes"].numpy(), np.array([a["bbox"] for a in kept]) * scale, rtol=1e-5)
        assert d["labels"].tolist() == [a["category_id"] for a in kept]


def test_detection_filter_empty(cfg, tmp_path):
    records = DatasetCatalog.get("toy_voc_test")
    only_difficult = sum(all(a["difficult"] for a in r["annotations"]) for r in records)
    cfg.DATASETS.TRAIN = ("toy_voc_test",)
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = True
    assert len(build_detection_train_loader(cfg).dataset) == len(records) - only_difficult
    cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS = False
    assert len(build_detection_train_loader(cfg).dataset) == len(records)


def test_detection_test_loader_gives_original(cfg):
    cfg.INPUT.FORMAT = "RGB"
    (d,) = next(iter(build_detection_test_loader(cfg, "toy_voc_test")))
    record = DatasetCatalog.get("toy_voc_test")[0]
    assert d["image"].shape == (3, record["height"], record["width"]) and d["image_id"] == record["image_id"]
    assert (d["height"], d["width"]) == (record["height"], record["width"]) and d["file_name"] == record["file_name"]


def test_concatenating_different_classes_fails(cfg):
    cfg.DATASETS.TRAIN = ("toy_coco_train", "coco_2017_train")
    with pytest.raises(ValueError, match="thing_classes"):
        build_detection_train_loader(cfg)
