"""TEST.BEST_METRIC: model_best.pth follows the best evaluation (max and min), carries the metric and iteration in
its meta, survives a resume, and an unknown metric is named with the ones that exist."""
import hashlib

import pytest
import torch
from torch import nn

from resdet.checkpoint.checkpointer import Checkpointer
from resdet.config import ConfigError
from resdet.engine.best_checkpoint import BestCheckpointer


def _model(value: float) -> nn.Module:
    model = nn.Linear(2, 1)
    nn.init.constant_(model.weight, value)
    return model


def _best_file(tmp_path):
    data = torch.load(tmp_path / "model_best.pth", weights_only=True)
    return data["model"]["weight"][0, 0].item(), data["meta"]


def test_keeps_the_weights_of_the_best_evaluation_and_resumes(tmp_path):
    model = _model(0.0)
    best = BestCheckpointer(Checkpointer(model, str(tmp_path), meta={"class_names": ["x"]}), "bbox/AP50")
    for iteration, value in ((10, 50.0), (20, 40.0), (30, 60.0), (40, float("nan"))):
        nn.init.constant_(model.weight, float(iteration))  # the weights tell which evaluation was saved
        best.update({"bbox/AP50": value, "bbox/AP": 1.0}, iteration)
    weight, meta = _best_file(tmp_path)
    assert weight == 30.0
    assert meta == {"class_names": ["x"], "best_metric": "bbox/AP50", "best_value": 60.0, "best_iteration": 30,
                    "best_mode": "max"}
    assert set(torch.load(tmp_path / "model_best.pth", weights_only=True)) == {"model", "meta"}  # no optimizer
    digest = (tmp_path / "model_best.pth.sha256").read_text().split()[0]
    assert digest == hashlib.sha256((tmp_path / "model_best.pth").read_bytes()).hexdigest()

    resumed = BestCheckpointer(Checkpointer(model, str(tmp_path)), "bbox/AP50", resume=True)
    assert resumed.best == (60.0, 30)
    nn.init.constant_(model.weight, 50.0)
    resumed.update({"bbox/AP50": 55.0}, 50)  # worse than the best before the resume: kept
    assert _best_file(tmp_path)[0] == 30.0
    fresh = BestCheckpointer(Checkpointer(model, str(tmp_path)), "bbox/AP50", resume=False)
    fresh.update({"bbox/AP50": 1.0}, 1)  # a new run in the same folder starts over
    assert _best_file(tmp_path)[0] == 50.0


def test_min_mode_keeps_the_lowest(tmp_path):
    model = _model(0.0)
    best = BestCheckpointer(Checkpointer(model, str(tmp_path)), "loss", mode="min")
    for iteration, value in ((1, 3.0), (2, 1.0), (3, 2.0)):
        nn.init.constant_(model.weight, float(iteration))
        best.update({"loss": value}, iteration)
    assert _best_file(tmp_path)[0] == 2.0
    # a resume under another metric or mode does not take the old file's best
    assert BestCheckpointer(Checkpointer(model, str(tmp_path)), "loss", mode="max", resume=True).best is None


def test_unknown_metric_names_the_reported_ones(tmp_path):
    best = BestCheckpointer(Checkpointer(_model(0.0), str(tmp_path)), "bbox/AP-50")
    with pytest.raises(ConfigError, match=r"TEST.BEST_METRIC is 'bbox/AP-50'.*bbox/AP, bbox/AP50"):
        best.update({"bbox/AP50": 1.0, "bbox/AP": 2.0}, 5)
    best.update({}, 5)  # a process that does not evaluate reports nothing: nothing happens
    assert not (tmp_path / "model_best.pth").exists()
