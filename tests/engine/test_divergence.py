"""Divergence: a non-finite loss or non-finite weights stop training with a message naming the iteration, each
loss term and the last good checkpoint; no checkpoint with non-finite values is ever written."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resdet.engine.train_loop import run_training
from resdet.engine.trainer import TrainingDiverged

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 2))


def _batches(count: int, nan_at: int = -1, inf_gradient_at: int = -1):
    """(images, labels, poison) per iteration: NaN images at `nan_at`, a loss with an infinite gradient at
    `inf_gradient_at`."""
    generator = torch.Generator().manual_seed(0)
    for iteration in range(count):
        images = torch.rand(4, 3, 2, 2, generator=generator)
        yield (images * float("nan") if iteration == nan_at else images), torch.tensor([0, 1, 0, 1]), \
            iteration == inf_gradient_at


def _two_term_loss(model: nn.Module, batch):
    images, labels, poison = batch
    weight = model[1].weight
    losses = {"loss_cls": F.cross_entropy(model(images), labels), "loss_decay": 0.01 * weight.square().sum()}
    if poison:  # value 0, gradient +inf: the loss stays finite while the step makes the weights infinite
        losses["loss_decay"] = losses["loss_decay"] + torch.sqrt(weight - weight.detach()).sum()
    return losses


def _checkpoints_are_finite(directory) -> list:
    names = sorted(f for f in os.listdir(directory) if f.endswith(".pth"))
    for name in names:
        model = torch.load(os.path.join(directory, name), weights_only=True)["model"]
        assert all(torch.isfinite(value).all() for value in model.values()), name
    return names


@pytest.fixture
def train_cfg(cfg, tmp_path):
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS, cfg.SOLVER.CHECKPOINT_PERIOD = 0.1, 10, (), 2
    cfg.OUTPUT_DIR = str(tmp_path)
    return cfg


def test_non_finite_loss_names_iteration_terms_and_last_good_checkpoint(train_cfg, tmp_path):
    with pytest.raises(TrainingDiverged) as caught:
        run_training(train_cfg, False, _model(), _batches(10, nan_at=5), _two_term_loss, None)
    message = str(caught.value)
    assert "loss became non-finite at iteration 5: {'loss_cls': nan, 'loss_decay': 0.0" in message
    assert f"the last good checkpoint is {tmp_path / 'model_0000004.pth'}" in message and "--resume" in message
    assert caught.value.iteration == 5
    assert _checkpoints_are_finite(tmp_path) == ["model_0000002.pth", "model_0000004.pth"]


def test_non_finite_weights_are_never_saved(train_cfg, tmp_path):
    with pytest.raises(TrainingDiverged) as caught:
        run_training(train_cfg, False, _model(), _batches(10, inf_gradient_at=3), _two_term_loss, None)
    message = str(caught.value)
    assert "weights became non-finite at iteration 3" in message and "1.weight" in message
    assert f"the last good checkpoint is {tmp_path / 'model_0000002.pth'}" in message
    assert _checkpoints_are_finite(tmp_path) == ["model_0000002.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000002.pth"


def test_divergence_before_any_checkpoint_says_so(train_cfg, tmp_path):
    with pytest.raises(TrainingDiverged, match="iteration 0: .*no checkpoint was saved before it"):
        run_training(train_cfg, False, _model(), _batches(10, nan_at=0), _two_term_loss, None)
    assert _checkpoints_are_finite(tmp_path) == []


def test_train_det_with_a_huge_lr_reports_divergence_without_traceback(toy_datasets, tmp_path):
    env = dict(os.environ, RESDET_DATASETS=str(toy_datasets), OMP_NUM_THREADS="1")
    result = subprocess.run([
        sys.executable, "tools/train_det.py", "--config", "configs/toy_frcnn_r18_fpn.yaml", "SOLVER.BASE_LR", "1e8",
        "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(96,)",
        "SOLVER.MAX_ITER", "20", "SOLVER.CHECKPOINT_PERIOD", "1", "DATASETS.TEST", "()", "OUTPUT_DIR", str(tmp_path),
    ], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    error = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert "loss became non-finite at iteration" in error
    for term in ("loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"):
        assert f"'{term}': " in error, term
    saved = _checkpoints_are_finite(tmp_path)
    if saved:
        assert f"the last good checkpoint is {tmp_path / saved[-1]}" in error
    else:
        assert "no checkpoint was saved before it" in error
