"""The trainer loop and its hooks on a tiny model: learning, metrics, schedule, non-finite loss, resume."""
import json
import os

import pytest
import torch
from torch import nn

from resdet.checkpoint.checkpointer import Checkpointer
from resdet.engine import ClassificationLoss, HookBase, Trainer, default_hooks, prepare_model
from resdet.solver import build_lr_scheduler, build_optimizer
from resdet.utils.events import JSONWriter


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def fixed_batch():
    """Class 0 images are dark, class 1 bright: learnable in a few steps."""
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(8, 3, 8, 8, generator=generator)
    labels = torch.tensor([0, 1] * 4)
    images[labels == 1] += 1.0
    return images, labels


def repeat(batch):
    while True:
        yield batch


def make_trainer(cfg, model, output_dir, loader=None, eval_fn=None, amp=False):
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    checkpointer = Checkpointer(model, output_dir, optimizer=optimizer, scheduler=scheduler)
    trainer = Trainer(prepare_model(model), loader or repeat(fixed_batch()), optimizer,
                      ClassificationLoss(torch.device("cpu")), amp=amp)
    writers = [JSONWriter(os.path.join(output_dir, "metrics.json"))]
    trainer.register_hooks(default_hooks(scheduler, checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD,
                                         cfg.TEST.EVAL_PERIOD, eval_fn, writers))
    return trainer, checkpointer


def read_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as file:
        return [json.loads(line) for line in file]


@pytest.fixture
def solver_cfg(cfg):
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = 0.1, 30, (20,)
    cfg.SOLVER.CHECKPOINT_PERIOD, cfg.TEST.EVAL_PERIOD = 10, 15
    return cfg


def test_trains_writes_metrics_checkpoints_and_evaluates(solver_cfg, tmp_path):
    evaluated_at = []
    trainer, _ = make_trainer(solver_cfg, tiny_model(), str(tmp_path),
                              eval_fn=lambda: evaluated_at.append(trainer.iter) or {"top1": 50.0})
    trainer.train(0, 30)
    metrics = read_metrics(tmp_path)
    first, last = metrics[0], [m for m in metrics if "total_loss" in m][-1]
    assert first["iteration"] == 19 and last["iteration"] == 29
    assert {"loss_cls", "total_loss", "lr", "time", "data_time"} <= set(first)
    assert last["total_loss"] < 0.5 * first["total_loss"]
    assert first["lr"] == pytest.approx(0.1) and last["lr"] == pytest.approx(0.01)  # step at 20
    assert [m["eval/top1"] for m in metrics if "eval/top1" in m] == [50.0, 50.0]
    assert evaluated_at == [14, 30]  # periodic (after iteration 15) and final
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth")) == \
        ["model_0000010.pth", "model_0000020.pth", "model_final.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"


def test_non_finite_loss_names_iteration(solver_cfg, tmp_path):
    images, labels = fixed_batch()
    batches = iter([(images, labels), (images, labels), (images * float("nan"), labels)])
    trainer, _ = make_trainer(solver_cfg, tiny_model(), str(tmp_path), loader=batches)
    with pytest.raises(FloatingPointError, match=r"iteration 2: \{'loss_cls': nan\}"):
        trainer.train(0, 30)


class StopAt(HookBase):
    """Simulates a crash after a given number of iterations."""

    def __init__(self, iterations):
        self.iterations = iterations

    def after_step(self):
        if self.trainer.iter + 1 == self.iterations:
            raise KeyboardInterrupt


def test_resume_continues_iterations_and_matches_uninterrupted(solver_cfg, tmp_path):
    solver_cfg.SOLVER.STEPS = (12,)
    uninterrupted_dir, resumed_dir = str(tmp_path / "a"), str(tmp_path / "b")
    reference_model = tiny_model()
    trainer, _ = make_trainer(solver_cfg, reference_model, uninterrupted_dir)
    trainer.train(0, 30)

    interrupted, _ = make_trainer(solver_cfg, tiny_model(), resumed_dir)
    interrupted.register_hooks([StopAt(15)])
    with pytest.raises(KeyboardInterrupt):
        interrupted.train(0, 30)
    assert (tmp_path / "b" / "last_checkpoint").read_text() == "model_0000010.pth"

    model = tiny_model()
    resumed, checkpointer = make_trainer(solver_cfg, model, resumed_dir)
    start_iter = checkpointer.resume_or_load("", resume=True)["iteration"]
    assert start_iter == 10
    resumed.train(start_iter, 30)
    iterations = [m["iteration"] for m in read_metrics(resumed_dir) if "total_loss" in m]
    assert iterations[-1] == 29 and 19 in iterations
    # Same batch every step: weights, momentum and the lr schedule all resumed means identical weights.
    for name, value in reference_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, msg=name)


def test_cpu_amp_runs_in_bfloat16(solver_cfg, tmp_path):
    model = tiny_model()
    dtypes = []
    model[0].register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    trainer, _ = make_trainer(solver_cfg, model, str(tmp_path), amp=True)
    trainer.train(0, 3)
    assert dtypes == [torch.bfloat16] * 3
    assert model[0].weight.dtype == torch.float32


def test_channels_last(solver_cfg, tmp_path):
    model = prepare_model(tiny_model(), channels_last=True)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    loss = ClassificationLoss(torch.device("cpu"), channels_last=True)(model, fixed_batch())
    assert torch.isfinite(loss["loss_cls"])
