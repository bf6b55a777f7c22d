"""LR schedules against the paper's numbers and hand-computed warmup values."""
import math

import pytest
import torch

from resdet.solver import build_lr_scheduler, build_optimizer


def _lrs(cfg, iterations):
    """lr the scheduler gives each of `iterations` (0-based)."""
    scheduler = build_lr_scheduler(cfg, build_optimizer(cfg, torch.nn.Linear(2, 2)))
    lrs = {}
    for it in iterations:
        scheduler.last_epoch = it
        lrs[it] = scheduler.get_lr()[0]
    return lrs


def _stepped_lrs(cfg, num_iterations):
    """lr of the optimizer at each iteration when stepping once per iteration, as the trainer does."""
    optimizer = build_optimizer(cfg, torch.nn.Linear(2, 2))
    scheduler = build_lr_scheduler(cfg, optimizer)
    lrs = []
    for _ in range(num_iterations):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()  # no gradients: a no-op that keeps torch's step-order check quiet
        scheduler.step()
    return lrs


def test_cifar_steps_at_32k_and_48k(cfg):
    cfg.merge_from_file("configs/cifar/resnet20.yaml")
    lrs = _lrs(cfg, [0, 31999, 32000, 47999, 48000, 63999])
    assert lrs == pytest.approx({0: 0.1, 31999: 0.1, 32000: 0.01, 47999: 0.01, 48000: 0.001, 63999: 0.001})


def test_resnet110_constant_warmup(cfg):
    cfg.merge_from_file("configs/cifar/resnet110.yaml")
    lrs = _lrs(cfg, [0, 200, 399, 400, 31999, 32000])
    # The paper: 0.01 until training error < 80% (about 400 iterations), then 0.1.
    assert lrs == pytest.approx({0: 0.01, 200: 0.01, 399: 0.01, 400: 0.1, 31999: 0.1, 32000: 0.01})


def test_imagenet_steps(cfg):
    cfg.SOLVER.MAX_ITER = 600000
    cfg.SOLVER.STEPS = (150000, 300000, 450000)
    lrs = _lrs(cfg, [149999, 150000, 300000, 450000, 599999])
    assert lrs == pytest.approx({149999: 0.1, 150000: 0.01, 300000: 0.001, 450000: 1e-4, 599999: 1e-4})


def test_linear_warmup_by_hand(cfg):
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = 100, (50,)
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR, cfg.SOLVER.WARMUP_METHOD = 10, 0.1, "linear"
    lrs = _stepped_lrs(cfg, 100)
    # lr(t) = 0.1 * (0.1 + 0.9 * t / 10) during warmup
    expected = {0: 0.01, 5: 0.055, 9: 0.091, 10: 0.1, 49: 0.1, 50: 0.01, 99: 0.01}
    assert {it: lrs[it] for it in expected} == pytest.approx(expected)


def test_cosine(cfg):
    cfg.SOLVER.LR_SCHEDULER_NAME, cfg.SOLVER.MAX_ITER = "WarmupCosineLR", 100
    lrs = _lrs(cfg, [0, 50, 99])
    # 0.1 * (1 + cos(pi * t / T)) / 2
    assert lrs == pytest.approx({0: 0.1, 50: 0.05, 99: 0.1 * (1 + math.cos(math.pi * 0.99)) / 2})


def test_cosine_run_shorter_than_its_warmup_is_warned_of(cfg, caplog):
    cfg.SOLVER.LR_SCHEDULER_NAME, cfg.SOLVER.MAX_ITER = "WarmupCosineLR", 20
    cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = 40, 0.1
    with caplog.at_level("WARNING", logger="resdet.solver.build"):
        lrs = _lrs(cfg, [0, 10, 19])
    assert set(lrs.values()) == {0.0}  # the ramp's target, cos(pi * 1), is 0: what the warning says
    assert "WARMUP_ITERS 40 >= SOLVER.MAX_ITER 20" in caplog.text
    caplog.clear()
    cfg.SOLVER.WARMUP_ITERS = 5
    with caplog.at_level("WARNING", logger="resdet.solver.build"):
        assert _lrs(cfg, [10])[10] > 0
    assert "WARMUP_ITERS" not in caplog.text


def test_state_dict_resumes_schedule(cfg):
    cfg.SOLVER.MAX_ITER, cfg.SOLVER.STEPS = 100, (30,)
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    for _ in range(40):
        optimizer.step()
        scheduler.step()
    state = scheduler.state_dict()
    fresh_optimizer = build_optimizer(cfg, model)
    fresh = build_lr_scheduler(cfg, fresh_optimizer)
    fresh.load_state_dict(state)
    assert fresh_optimizer.param_groups[0]["lr"] == pytest.approx(0.01)


def test_steps_beyond_max_iter_are_ignored(cfg):
    cfg.SOLVER.MAX_ITER = 20  # the CIFAR steps (32k, 48k) lie beyond a short run
    cfg.SOLVER.STEPS = (32000, 48000)
    assert _lrs(cfg, [0, 19]) == pytest.approx({0: 0.1, 19: 0.1})


def test_unknown_scheduler_names_key(cfg):
    cfg.SOLVER.LR_SCHEDULER_NAME = "Nope"
    with pytest.raises(ValueError, match="SOLVER.LR_SCHEDULER_NAME"):
        build_lr_scheduler(cfg, build_optimizer(cfg, torch.nn.Linear(2, 2)))
