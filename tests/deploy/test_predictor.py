"""resdet.Predictor: the model's own outputs for arrays, paths and batches, in the original image's pixels; class
names from the checkpoint's meta, else the config's datasets, else class_<i>; a classifier's probabilities."""
import logging
import os

import cv2
import numpy as np
import pytest
import torch

import resdet
from resdet.checkpoint.checkpointer import Checkpointer
from resdet.config import setup_cfg
from resdet.data.datasets import TOY_CLASSES

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
TOY_DET = os.path.join(CONFIGS, "toy_frcnn_r18_fpn.yaml")
TOY_CLS = os.path.join(CONFIGS, "toy_cls_r18.yaml")
SMALL_DET = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
NAMES = ["disc", "plus", "box", "wedge"]


def image(seed: int, height: int, width: int) -> np.ndarray:
    """A BGR uint8 image of smoothed noise."""
    noise = np.random.default_rng(seed).integers(0, 256, (height, width, 3)).astype(np.uint8)
    return cv2.blur(noise, (5, 5))


def as_input(bgr: np.ndarray, image_format: str) -> torch.Tensor:
    """(3, H, W) float 0-255 in the model's channel order."""
    return torch.from_numpy(bgr[:, :, ::-1] if image_format == "RGB" else bgr).permute(2, 0, 1).float()


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A toy detector's config, its model and a checkpoint carrying made-up class names."""
    root = tmp_path_factory.mktemp("predictor")
    cfg = setup_cfg(TOY_DET, SMALL_DET)
    torch.manual_seed(0)
    model = resdet.build_model(cfg).eval()
    Checkpointer(model, str(root), meta={"class_names": NAMES}).save("model_final")
    torch.save({"model": model.state_dict()}, root / "old.pth")
    return cfg, model, root


def test_detector_outputs_are_the_models(detector, tmp_path):
    cfg, model, root = detector
    predictor = resdet.Predictor(cfg, weights=str(root / "model_final.pth"))
    assert predictor.class_names == NAMES
    bgr = image(0, 70, 90)
    output = predictor(bgr)
    assert set(output) == {"boxes", "scores", "labels", "class_names"} and len(output["boxes"]) > 0
    with torch.no_grad():
        expected = model([{"image": as_input(bgr, cfg.INPUT.FORMAT)}])[0]
    for key in ("boxes", "scores", "labels"):
        np.testing.assert_array_equal(output[key], expected[key].numpy())
    assert output["class_names"] == [NAMES[label] for label in output["labels"]]
    assert (output["boxes"][:, 2] <= 90).all() and (output["boxes"][:, 3] <= 70).all()  # original pixels
    path = str(tmp_path / "a.png")
    cv2.imwrite(path, bgr)
    np.testing.assert_array_equal(predictor(path)["boxes"], output["boxes"])
    batch = predictor([path, image(1, 60, 100)])  # one padded batch: its numbers differ slightly from one image's
    assert isinstance(batch, list) and len(batch) == 2 and all(set(out) == set(output) for out in batch)


def test_test_time_augmentation_outputs_are_the_wrappers(detector):
    """TEST.AUG.ENABLED: the Predictor's detections are DetectorWithTTA's on the same input."""
    from resdet.modeling.detector.tta import DetectorWithTTA

    cfg, model, root = detector
    aug = ["TEST.AUG.ENABLED", "True", "TEST.AUG.MIN_SIZES", "(48, 80)", "TEST.AUG.MAX_SIZE", "200"]
    predictor = resdet.Predictor(setup_cfg(TOY_DET, SMALL_DET + aug), weights=str(root / "model_final.pth"))
    bgr = image(2, 70, 90)
    output = predictor(bgr)
    with torch.no_grad():
        tta = DetectorWithTTA(model, [48, 80], 200, True, cfg.TEST.AUG.MERGE, cfg.MODEL.ROI_HEADS.NMS_THRESH_TEST,
                              cfg.MODEL.ROI_HEADS.DETECTIONS_PER_IMAGE)
        expected = tta([{"image": as_input(bgr, cfg.INPUT.FORMAT)}])
    for key in ("boxes", "scores", "labels"):
        np.testing.assert_array_equal(output[key], expected[0][key].numpy())
    assert len(output["boxes"]) > 0


def test_old_checkpoint_takes_the_config_datasets_names(detector, caplog):
    cfg, _, root = detector
    with caplog.at_level(logging.WARNING):
        predictor = resdet.Predictor(cfg, weights=str(root / "old.pth"))
    assert predictor.class_names == list(TOY_CLASSES) and "carry no class names" in caplog.text
    caplog.clear()
    nameless = cfg.clone()
    nameless.defrost()
    nameless.DATASETS.TRAIN, nameless.DATASETS.TEST = (), ()
    with caplog.at_level(logging.WARNING):
        predictor = resdet.Predictor(nameless, weights=str(root / "old.pth"))
    assert predictor.class_names == ["class_0", "class_1", "class_2", "class_3"] and "class_0" in caplog.text


def test_config_file_device_and_amp(detector):
    _, _, root = detector
    predictor = resdet.Predictor(TOY_DET, weights=str(root / "model_final.pth"), device="cpu", amp=True)
    assert predictor.cfg.INPUT.MIN_SIZE_TEST == 160 and predictor.device.type == "cpu"
    output = predictor(image(2, 50, 60))
    assert output["boxes"].dtype == np.float32 and np.isfinite(output["boxes"]).all()


def test_classifier_probabilities_and_top5(tmp_path):
    cfg = setup_cfg(TOY_CLS, ["MODEL.DEVICE", "cpu"])
    torch.manual_seed(0)
    model = resdet.build_model(cfg)
    names = [f"shape{i}" for i in range(10)]
    Checkpointer(model, str(tmp_path), meta={"class_names": names}).save("cls")
    predictor = resdet.Predictor(cfg, weights=str(tmp_path / "cls.pth"))
    bgr = image(3, 64, 64)
    output = predictor(bgr)
    assert set(output) == {"scores", "top5", "class_names"}
    assert output["scores"].shape == (10,) and output["scores"].sum() == pytest.approx(1.0, abs=1e-5)
    assert list(output["top5"]) == list(np.argsort(-output["scores"])[:5])
    assert output["class_names"] == [names[i] for i in output["top5"]]
    with torch.no_grad():
        logits = predictor.model(as_input(bgr, cfg.INPUT.FORMAT)[None])  # "cifar" augmentation: the image as is
    np.testing.assert_allclose(output["scores"], torch.softmax(logits, 1)[0].numpy(), atol=1e-6)


def test_bad_inputs_are_named(detector):
    cfg, _, root = detector
    predictor = resdet.Predictor(cfg, weights=str(root / "model_final.pth"))
    with pytest.raises(ValueError, match="float32 array of shape"):
        predictor(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        predictor("missing.jpg")
