"""A checkpoint's `meta`: written by the Checkpointer with plain values, read back by torch.load(weights_only=True)
and load_weights, and a transferred backbone whose pixels differ from the config's is reported."""
import logging
import os

import torch

import resdet
from resdet.checkpoint.checkpointer import Checkpointer
from resdet.checkpoint.meta import model_meta
from resdet.config import setup_cfg
from resdet.data.datasets import TOY_CLASSES

CONFIGS = os.path.join(os.path.dirname(__file__), "..", "..", "configs")
TOY_DET = os.path.join(CONFIGS, "toy_frcnn_r18_fpn.yaml")
TOY_CLS = os.path.join(CONFIGS, "toy_cls_r18.yaml")


def test_meta_round_trip_with_weights_only(tmp_path):
    cfg = setup_cfg(TOY_DET, ["MODEL.DEVICE", "cpu"])
    meta = model_meta(cfg)
    assert meta["class_names"] == list(TOY_CLASSES) and meta["num_classes"] == 4
    assert (meta["input_format"], meta["min_size_test"], meta["max_size_test"]) == ("BGR", 160, 320)
    assert meta["pixel_std"] == list(cfg.MODEL.PIXEL_STD) and meta["resdet_version"] == resdet.__version__
    model = torch.nn.Linear(2, 2)
    Checkpointer(model, str(tmp_path), meta=meta).save("model_final", iteration=3)
    saved = torch.load(tmp_path / "model_final.pth", weights_only=True)
    assert saved["meta"] == meta and saved["iteration"] == 3
    report = resdet.load_weights(torch.nn.Linear(2, 2), str(tmp_path / "model_final.pth"))
    assert report.format == "resdet" and report.meta == meta and not report.missing
    assert Checkpointer(torch.nn.Linear(2, 2), str(tmp_path)).load(str(tmp_path / "model_final.pth"))["meta"] == meta


def test_checkpoint_without_meta_loads_with_empty_meta(tmp_path):
    torch.save({"model": torch.nn.Linear(2, 2).state_dict()}, tmp_path / "old.pth")
    report = resdet.load_weights(torch.nn.Linear(2, 2), str(tmp_path / "old.pth"))
    assert report.meta == {} and len(report.loaded) == 2


def test_backbone_trained_on_other_pixels_is_reported(tmp_path, caplog):
    classifier_cfg = setup_cfg(TOY_CLS, ["MODEL.DEVICE", "cpu", "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"])
    classifier = resdet.build_model(classifier_cfg)
    Checkpointer(classifier, str(tmp_path), meta=model_meta(classifier_cfg)).save("cls")
    weights = str(tmp_path / "cls.pth")
    with caplog.at_level(logging.WARNING):
        resdet.build_model(setup_cfg(TOY_DET, ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.WEIGHTS", weights]))
    assert "pixel_std [1.0, 1.0, 1.0]" in caplog.text and weights in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        resdet.build_model(setup_cfg(TOY_DET, ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.WEIGHTS", weights,
                                               "MODEL.PIXEL_STD", "[1.0, 1.0, 1.0]"]))
    assert "trained on other pixels" not in caplog.text
