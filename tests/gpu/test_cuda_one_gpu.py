"""The CUDA-only code paths, on one GPU, one small test each, checked against an independent reference.

One GPU: fp16 autocast with the grad scaler (against fp32 training on the same batches), fused AdamW under the
scaler (against torch's unfused AdamW), the grad scaler and the CUDA random state in checkpoints (the restored
generator draws what the saved one drew next), an AMP training run of tools/train_cls.py that checkpoints and
resumes, pinned batches and their non-blocking copies (against the CPU batch and loss), cudnn.benchmark (against
cudnn's default algorithms), the predictor and the detector's eval path on CUDA (against the CPU), RoIAlign on CUDA
(against the CPU's sparse kernel) and torch.export of a CUDA model (against the eager model).

Every test is marked `gpu` and skipped where torch.cuda.is_available() is False (the two-GPU ones where fewer than
two devices are visible). Run them with `pytest -m gpu tests/gpu` or tools/gpu_check.sh; docs/gpu.md maps each
test to the code it covers. Comparisons across devices run with TF32 off (`exact_fp32`), so fp32 means fp32.
"""
import argparse
import copy
import json
import logging
import math
import os
from statistics import mean

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cuda_helpers import (  # tests/gpu is on sys.path: pytest's rootdir import
    _cfg,
    _check,
    _cifar_cfg,
    _matched_fraction,
    _run_tool,
    _separable_batches,
    _spread_layers,
    _train_classifier,
    needs_cuda,
)
from torch import nn

import resdet

# ---------------------------------------------------------------- one GPU


@pytest.mark.gpu
@needs_cuda
def test_amp_fp16_training_with_the_grad_scaler_tracks_fp32():
    """resdet/engine/trainer.py Trainer.run_step: fp16 autocast, loss scaled by a GradScaler, fp32 master weights."""
    torch.manual_seed(0)
    initial = resdet.build_model(_cifar_cfg("cuda", "MODEL.CLASSIFIER.NUM_CLASSES", 4))
    batches = _separable_batches(2) * 20
    device = torch.device("cuda")
    fp32_trainer, fp32_losses, fp32_dtypes = _train_classifier(copy.deepcopy(initial), batches, False, device)
    amp_model = copy.deepcopy(initial)
    amp_trainer, amp_losses, amp_dtypes = _train_classifier(amp_model, batches, True, device)

    assert fp32_trainer.grad_scaler is None and amp_trainer.grad_scaler is not None
    assert amp_trainer.grad_scaler.is_enabled()
    assert fp32_dtypes == {torch.float32} and amp_dtypes == {torch.float16}
    assert all(param.dtype == torch.float32 for param in amp_model.parameters())  # the weights stay fp32
    assert len(amp_losses) == len(fp32_losses) == len(batches)
    assert all(math.isfinite(value) for value in amp_losses)
    start = fp32_losses[0]  # ln 4 give or take: same weights, same batch
    assert amp_losses[0] == pytest.approx(start, abs=0.02)
    fp32_end, amp_end = mean(fp32_losses[-5:]), mean(amp_losses[-5:])
    assert fp32_end < 0.25 * start, fp32_losses
    assert abs(amp_end - fp32_end) < 0.1 * start, (fp32_losses, amp_losses)
    scale = amp_trainer.grad_scaler.get_scale()
    assert math.isfinite(scale) and scale >= 2.0 ** 8  # overflow halves it; a collapsed scale means inf gradients


@pytest.mark.gpu
@needs_cuda
def test_fused_adamw_under_the_grad_scaler_matches_unfused_adamw(exact_fp32):
    """resdet/solver/build.py build_optimizer: torch's fused AdamW on CUDA parameters, stepped by a GradScaler
    (which hands the fused kernel its scale and found-inf flag), and the version bump after each fused step."""
    from resdet.solver import build_optimizer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).cuda()
    reference = copy.deepcopy(model)
    cfg = resdet.get_cfg()
    cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY = "AdamW", 0.01, 0.05
    optimizer = build_optimizer(cfg, model)
    assert optimizer.defaults["fused"] is True
    unfused = torch.optim.AdamW(reference.parameters(), lr=0.01, betas=(0.9, 0.999), weight_decay=0.05,
                                foreach=False, fused=False)
    scaler = torch.amp.GradScaler("cuda", init_scale=1024.0)
    inputs = torch.randn(64, 16, generator=torch.Generator().manual_seed(1)).cuda()
    for _ in range(3):
        versions = [param._version for param in model.parameters()]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(model(inputs).pow(2).mean()).backward()
        scaler.step(optimizer)
        scaler.update()
        assert all(param._version > version for param, version in zip(model.parameters(), versions))
        unfused.zero_grad(set_to_none=True)
        reference(inputs).pow(2).mean().backward()
        unfused.step()
    assert scaler.get_scale() == 1024.0  # no step was skipped
    for param, expected in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(param, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
@needs_cuda
def test_grad_scaler_state_round_trips_through_the_checkpointer(tmp_path):
    """resdet/engine/train_loop.py _resumable_state puts the trainer's GradScaler into checkpoints (CUDA AMP only)."""
    from resdet.checkpoint.checkpointer import Checkpointer

    param = nn.Parameter(torch.ones(3, device="cuda"))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0 ** 12, growth_interval=3)
    for _ in range(2):  # two good steps: the growth tracker counts them
        optimizer.zero_grad()
        scaler.scale(param.sum()).backward()
        scaler.step(optimizer)
        scaler.update()
    scaler.update(new_scale=1234.5)
    path = Checkpointer(nn.Linear(1, 1), str(tmp_path), grad_scaler=scaler).save("model_0000001")

    restored = torch.amp.GradScaler("cuda")
    Checkpointer(nn.Linear(1, 1), str(tmp_path), grad_scaler=restored).load(path)
    assert restored.state_dict() == scaler.state_dict()
    assert restored.get_scale() == 1234.5
    one = torch.ones((), device="cuda")
    assert restored.scale(one).item() == scaler.scale(one).item() == 1234.5


@pytest.mark.gpu
@needs_cuda
def test_cuda_random_state_saved_in_a_checkpoint_restores_the_same_draws(tmp_path):
    """resdet/engine/rng.py capture_rng_state / restore_rng_state: the CUDA generator (randperm, dropout and the RPN
    and RoI sampling on CUDA draw from it) goes into checkpoints through RNGStates."""
    from resdet.checkpoint.checkpointer import Checkpointer
    from resdet.engine.rng import RNGStates

    def draws():
        return (torch.rand(1000, device="cuda"), torch.randperm(50, device="cuda"),
                F.dropout(torch.ones(64, device="cuda"), 0.5, training=True))

    torch.cuda.manual_seed(1234)
    draws()  # the stream has moved on from its seed
    path = Checkpointer(nn.Linear(2, 2), str(tmp_path), rng=RNGStates()).save("model_0000009")
    expected = draws()  # what an uninterrupted run draws next
    torch.cuda.manual_seed(99)
    draws()

    per_rank = torch.load(path, weights_only=True)["rng"]["per_rank"]
    assert len(per_rank) == 1 and "cuda" in per_rank[0]
    loaded = RNGStates()
    Checkpointer(nn.Linear(2, 2), str(tmp_path), rng=loaded).load(path)
    loaded.restore()
    for got, want in zip(draws(), expected):
        assert torch.equal(got, want)


@pytest.mark.gpu
@needs_cuda
def test_amp_training_on_cuda_checkpoints_the_scaler_and_cuda_rng_then_resumes(toy_datasets, tmp_path):
    """tools/train_cls.py with MODEL.DEVICE cuda and SOLVER.AMP.ENABLED: the checkpoint holds the grad scaler and
    the CUDA generator, and --resume continues from it."""
    out = tmp_path / "out"
    common = ["--config", "configs/toy_cls_r18.yaml", "MODEL.DEVICE", "cuda", "SOLVER.AMP.ENABLED", "True",
              "DATALOADER.NUM_WORKERS", 0, "SOLVER.IMS_PER_BATCH", 8, "INPUT.CROP.SIZE", 32, "DATASETS.TEST", "()",
              "SEED", 0, "SOLVER.CHECKPOINT_PERIOD", 2, "OUTPUT_DIR", out]
    _check(_run_tool("train_cls.py", [*common, "SOLVER.MAX_ITER", 4], toy_datasets))
    checkpoint = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)
    assert checkpoint["iteration"] == 4
    assert math.isfinite(checkpoint["grad_scaler"]["scale"]) and checkpoint["grad_scaler"]["scale"] > 0
    assert "cuda" in checkpoint["rng"]["per_rank"][0]

    _check(_run_tool("train_cls.py", ["--resume", *common, "SOLVER.MAX_ITER", 6], toy_datasets))
    assert "training from iteration 4 to 6" in (out / "log.txt").read_text()
    rows = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    losses = {row["iteration"]: row["total_loss"] for row in rows if "total_loss" in row}
    assert 5 in losses and all(math.isfinite(value) for value in losses.values())
    assert torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["iteration"] == 6


@pytest.mark.gpu
@needs_cuda
def test_batches_for_a_cuda_model_are_pinned_and_copied_without_blocking(toy_datasets, monkeypatch, exact_fp32):
    """resdet/data/build.py _dataloader pins batches when MODEL.DEVICE is cuda; ClassificationLoss copies them with
    non_blocking=True. The batch and the loss equal the CPU's."""
    from resdet.data import build_classification_train_loader, build_detection_train_loader
    from resdet.engine import ClassificationLoss

    monkeypatch.setenv("RESDET_DATASETS", str(toy_datasets))

    def cls_cfg(device: str, workers: int):
        return _cfg("toy_cls_r18.yaml", "MODEL.DEVICE", device, "DATALOADER.NUM_WORKERS", workers,
                    "SOLVER.IMS_PER_BATCH", 4, "INPUT.CROP.SIZE", 32, "SEED", 0)

    loader = build_classification_train_loader(cls_cfg("cuda", 1))  # a worker: pinned by the pin-memory thread
    images, labels = next(loader)
    del loader
    assert images.is_pinned() and labels.is_pinned()
    cpu_images, cpu_labels = next(build_classification_train_loader(cls_cfg("cpu", 0)))
    assert not cpu_images.is_pinned()
    assert torch.equal(images, cpu_images) and torch.equal(labels, cpu_labels)  # pinning moves, never changes

    det_cfg = _cfg("toy_frcnn_r18_fpn.yaml", "MODEL.DEVICE", "cuda", "DATALOADER.NUM_WORKERS", 0,
                   "SOLVER.IMS_PER_BATCH", 2, "SEED", 0)
    batch = next(build_detection_train_loader(det_cfg))
    assert len(batch) == 2
    for item in batch:
        tensors = [value for value in item.values() if torch.is_tensor(value)]
        assert item["image"].is_pinned() and all(tensor.is_pinned() for tensor in tensors)

    torch.manual_seed(0)
    model = resdet.build_model(cls_cfg("cpu", 0)).eval()
    cuda_model = copy.deepcopy(model).cuda()
    with torch.no_grad():
        on_cpu = ClassificationLoss(torch.device("cpu"))(model, (cpu_images, cpu_labels))["loss_cls"]
        on_cuda = ClassificationLoss(torch.device("cuda"))(cuda_model, (images, labels))["loss_cls"]
    assert on_cuda.device.type == "cuda"
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_cudnn_benchmark_follows_the_config(tmp_path, exact_fp32):
    """resdet/engine/defaults.py default_setup sets torch.backends.cudnn.benchmark from CUDNN_BENCHMARK; the
    convolutions cudnn then picks by timing give what its default ones give."""
    from resdet.engine import default_setup

    resdet_logger = logging.getLogger("resdet")
    saved = (torch.backends.cudnn.benchmark, list(resdet_logger.handlers), resdet_logger.propagate,
             resdet_logger.level)
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, padding=1).cuda()
    inputs = torch.randn(4, 16, 24, 24, device="cuda")
    outputs = {}
    try:
        for flag in (True, False):
            cfg = resdet.get_cfg()
            cfg.MODEL.DEVICE, cfg.OUTPUT_DIR, cfg.SEED, cfg.CUDNN_BENCHMARK = "cuda", str(tmp_path / str(flag)), 0, flag
            default_setup(cfg, argparse.Namespace(config="", opts=[]))
            assert torch.backends.cudnn.benchmark == flag
            with torch.no_grad():
                outputs[flag] = conv(inputs)
    finally:  # default_setup configured the process's logging and cudnn: put both back
        torch.backends.cudnn.benchmark = saved[0]
        for handler in [h for h in resdet_logger.handlers if h not in saved[1]]:
            resdet_logger.removeHandler(handler)
            handler.close()
        for handler in [h for h in saved[1] if h not in resdet_logger.handlers]:
            resdet_logger.addHandler(handler)
        resdet_logger.propagate = saved[2]
        resdet_logger.setLevel(saved[3])
    torch.testing.assert_close(outputs[True], outputs[False], rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
def test_predictor_on_cuda_matches_the_cpu(exact_fp32):
    """resdet/deploy/predictor.py Predictor(device="cuda"): the classifier's probabilities equal the CPU's; with
    amp=True (fp16 autocast on CUDA) they stay close."""
    cfg = _cifar_cfg("cpu")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(3)]
    on_cpu = resdet.Predictor(cfg, device="cpu")
    _spread_layers({on_cpu.model.fc: 1.5}, lambda: on_cpu(images))
    on_cuda = resdet.Predictor(cfg, device="cuda")
    with_amp = resdet.Predictor(cfg, device="cuda", amp=True)
    for predictor in (on_cuda, with_amp):
        predictor.model.load_state_dict(on_cpu.model.state_dict())
        assert predictor.device.type == "cuda"

    expected = on_cpu(images)
    assert max(float(out["scores"].max()) for out in expected) > 0.2  # not uniform: the comparison can fail
    for want, got, amp in zip(expected, on_cuda(images), with_amp(images)):
        assert got["scores"].dtype == amp["scores"].dtype == np.float32
        np.testing.assert_allclose(got["scores"], want["scores"], atol=1e-4)
        np.testing.assert_allclose(amp["scores"], want["scores"], atol=3e-2)


@pytest.mark.gpu
@needs_cuda
def test_detector_eval_on_cuda_matches_the_cpu(toy_datasets, monkeypatch, exact_fp32):
    """The detector's eval path on CUDA (torchvision's RoIAlign and NMS kernels, cudnn convolutions, the folded
    norms and cached weights) against the CPU's (oneDNN packed convolutions, the sparse RoIAlign): the same features
    and detections; under fp16 autocast close to them."""
    import cv2

    monkeypatch.setenv("RESDET_DATASETS", str(toy_datasets))
    cfg = _cfg("toy_frcnn_r18_fpn.yaml", "MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", 0.0,
               "INPUT.MIN_SIZE_TEST", 128, "INPUT.MAX_SIZE_TEST", 256)
    folder = toy_datasets / "toy" / "coco" / "val"
    images = [cv2.imread(str(folder / name)) for name in sorted(os.listdir(folder))[:2]]
    torch.manual_seed(0)
    on_cpu = resdet.Predictor(cfg, device="cpu")
    rpn, box_predictor = on_cpu.model.proposal_generator.rpn_head, on_cpu.model.roi_heads.box_predictor
    _spread_layers({rpn.objectness_logits: 2.0, rpn.anchor_deltas: 0.2, box_predictor.cls_score: 2.0,
                    box_predictor.bbox_pred: 0.2}, lambda: on_cpu(images))
    on_cuda = resdet.Predictor(cfg, device="cuda")
    with_amp = resdet.Predictor(cfg, device="cuda", amp=True)
    for predictor in (on_cuda, with_amp):
        predictor.model.load_state_dict(on_cpu.model.state_dict())

    pixels = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(2))
    pixels = pixels.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        cpu_features = on_cpu.model.backbone(pixels)
        cuda_features = on_cuda.model.backbone(pixels.cuda())
    for name, want in cpu_features.items():
        torch.testing.assert_close(cuda_features[name].cpu(), want, rtol=1e-3, atol=1e-4 * float(want.abs().max()))

    for image, want, got, amp in zip(images, on_cpu(images), on_cuda(images), with_amp(images)):
        assert len(want["scores"]) >= 20
        for out in (got, amp):
            assert out["boxes"].dtype == out["scores"].dtype == np.float32 and np.isfinite(out["boxes"]).all()
            height, width = image.shape[:2]
            assert (out["boxes"] >= -1e-3).all() and (out["boxes"][:, [0, 2]] <= width + 1e-3).all()
            assert (out["boxes"][:, [1, 3]] <= height + 1e-3).all()
        assert _matched_fraction(want, got, min_iou=0.9, max_score_diff=1e-3) >= 0.9
        assert _matched_fraction(got, amp, min_iou=0.7, max_score_diff=0.05) >= 0.5


@pytest.mark.gpu
@needs_cuda
def test_roi_align_levels_on_cuda_match_the_cpu_sparse_kernel(exact_fp32):
    """resdet/layers/roi_align.py roi_align_levels: CUDA maps go to torchvision's kernel level by level
    (pool_by_level), CPU ones may take the sparse product; forward, backward and fp16 inputs agree."""
    from resdet.layers.roi_align import roi_align_levels, sparse_roi_align_levels

    generator = torch.Generator().manual_seed(0)
    features = [torch.randn(2, 8, side, side, generator=generator).contiguous(memory_format=torch.channels_last)
                for side in (32, 16)]
    scales, count = (1 / 4, 1 / 8), 40
    corner = torch.rand(count, 2, generator=generator) * 96
    size = torch.rand(count, 2, generator=generator) * 28 + 4
    rois = torch.cat([torch.randint(0, 2, (count, 1), generator=generator).float(), corner, corner + size], dim=1)
    levels = torch.randint(0, 2, (count,), generator=generator)
    grad_output = torch.randn(count, 8, 7, 7, generator=generator)

    cpu_inputs = [feature.clone().requires_grad_() for feature in features]
    expected = sparse_roi_align_levels(cpu_inputs, rois, levels, 7, scales, sampling_ratio=2, aligned=True)
    (expected * grad_output).sum().backward()
    cuda_inputs = [feature.detach().cuda().requires_grad_() for feature in features]
    pooled = roi_align_levels(cuda_inputs, rois.cuda(), levels.cuda(), 7, scales, sampling_ratio=2, aligned=True)
    (pooled * grad_output.cuda()).sum().backward()

    assert pooled.device.type == "cuda"
    torch.testing.assert_close(pooled.detach().cpu(), expected.detach(), rtol=1e-5, atol=1e-5)
    for cuda_input, cpu_input in zip(cuda_inputs, cpu_inputs):  # CUDA's backward adds atomically, in any order
        torch.testing.assert_close(cuda_input.grad.cpu(), cpu_input.grad, rtol=1e-4, atol=1e-4)
    half = roi_align_levels([feature.cuda().half() for feature in features], rois.cuda(), levels.cuda(), 7, scales,
                            sampling_ratio=2, aligned=True)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float().cpu(), expected.detach(), rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
@needs_cuda
def test_torch_export_of_a_cuda_model_runs_as_the_eager_model(tmp_path, exact_fp32):
    """resdet/deploy/export.py export_model on a model whose MODEL.DEVICE is cuda: the .pt2 program, loaded back,
    runs on CUDA inputs (a batch and sizes other than the example's) and gives the eager model's logits."""
    from resdet.deploy.export import export_model

    cfg = _cfg("toy_cls_r18.yaml", "MODEL.DEVICE", "cuda")
    torch.manual_seed(0)
    model = resdet.build_model(cfg).eval()
    with torch.no_grad():  # statistics and a head that give logits of a few units, not ~0
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
        model.fc.weight.normal_(std=0.5)
    path = export_model(model, cfg, "torch_export", str(tmp_path), [f"class_{i}" for i in range(10)])
    program = torch.export.load(path)
    inputs = (torch.rand(3, 3, 48, 80, generator=torch.Generator().manual_seed(0)) * 255).cuda()
    with torch.no_grad():
        expected = model(inputs)
        got = program.module()(inputs)
    got = got[0] if isinstance(got, (tuple, list)) else got
    assert expected.abs().max() > 1
    assert got.device.type == "cuda" and got.shape == (3, 10)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert json.loads((tmp_path / "model.json").read_text())["file"] == "model.pt2"
