"""The CUDA-only code paths, one small test each, checked against an independent reference.

One GPU: fp16 autocast with the grad scaler (against fp32 training on the same batches), fused AdamW under the
scaler (against torch's unfused AdamW), the grad scaler and the CUDA random state in checkpoints (the restored
generator draws what the saved one drew next), an AMP training run of tools/train_cls.py that checkpoints and
resumes, pinned batches and their non-blocking copies (against the CPU batch and loss), cudnn.benchmark (against
cudnn's default algorithms), the predictor and the detector's eval path on CUDA (against the CPU), RoIAlign on CUDA
(against the CPU's sparse kernel) and torch.export of a CUDA model (against the eager model).

Two GPUs: a 2-process NCCL job started by `launch` (one process per GPU, TORCH_NCCL_ASYNC_ERROR_HANDLING set,
comm's helpers, DDP gradients against one process on the whole batch, SyncBN against BatchNorm on the whole batch,
every rank's CUDA random state gathered for checkpoints), a spawned job whose rank exits abruptly, and a
torchrun-style job (two tools/train_cls.py processes, no supervisor) whose rank is killed, ended by DIST.TIMEOUT.

Every test is marked `gpu` and skipped where torch.cuda.is_available() is False (the two-GPU ones where fewer than
two devices are visible). Run them with `pytest -m gpu tests/gpu` or tools/gpu_check.sh; docs/gpu.md maps each
test to the code it covers. Comparisons across devices run with TF32 off (`exact_fp32`), so fp32 means fp32.
"""
import argparse
import contextlib
import copy
import json
import logging
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from statistics import mean

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resdet

REPO = Path(__file__).resolve().parents[2]
CUDA = torch.cuda.is_available()
GPUS = torch.cuda.device_count() if CUDA else 0
NO_CUDA = "needs a CUDA GPU: torch.cuda.is_available() is False here"
NOT_TWO_GPUS = NO_CUDA if not CUDA else f"needs 2 CUDA GPUs for a 2-process NCCL job; {GPUS} visible"
needs_cuda = pytest.mark.skipif(not CUDA, reason=NO_CUDA)
needs_two_gpus = pytest.mark.skipif(GPUS < 2, reason=NOT_TWO_GPUS)
# torch reads both names (the first is current); the launcher's setting is checked with neither inherited
ASYNC_ERROR_VARS = ("TORCH_NCCL_ASYNC_ERROR_HANDLING", "NCCL_ASYNC_ERROR_HANDLING")
JOB_DEADLINE_S = 120  # a 2-process job still running after this is killed and its test fails
DEAD_RANK_LIMIT_S = 60  # a job whose rank died must have ended within this


# ---------------------------------------------------------------- helpers


@contextlib.contextmanager
def _fp32_without_tf32():
    """cudnn convolutions and CUDA matmuls in full fp32 (TF32 would round to 10 mantissa bits) while inside."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def exact_fp32():
    with _fp32_without_tf32():
        yield


def _cfg(config: str, *overrides):
    cfg = resdet.get_cfg()
    cfg.merge_from_file(str(REPO / "configs" / config))
    cfg.merge_from_list([str(value) for value in overrides])
    return cfg


def _cifar_cfg(device: str, *overrides):
    """A ResNet-8 CIFAR classifier (one block per stage, 8-16-32 filters), inputs scaled to unit variance."""
    return _cfg("cifar/resnet20.yaml", "MODEL.CIFAR_RESNET.N", 1, "MODEL.CIFAR_RESNET.WIDTHS", "[8, 16, 32]",
                "MODEL.PIXEL_STD", "[57.0, 57.0, 57.0]", "MODEL.DEVICE", device, *overrides)


def _run_tool(tool: str, args, datasets_root, timeout: int = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, RESDET_DATASETS=str(datasets_root), OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _check(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def _write_pid(folder: str) -> None:
    """Record this process, so that a test can kill what it started if the job hangs."""
    Path(folder, f"pid_{os.getpid()}").touch()


def _kill_recorded(folder: Path) -> None:
    for marker in folder.glob("pid_*"):
        try:
            os.kill(int(marker.name[4:]), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _launch_with_deadline(main_func, args, folder: Path, seconds: float):
    """`launch(main_func, 2, args=args)`; a job still running after `seconds` has its processes killed. Returns
    (seconds it took, the exception launch raised or None)."""
    from resdet.engine import launch

    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(seconds):
            _kill_recorded(folder)

    threading.Thread(target=watchdog, daemon=True).start()
    start, error = time.monotonic(), None
    try:
        launch(main_func, 2, args=args)
    except Exception as err:  # noqa: BLE001 - the test inspects it
        error = err
    finally:
        done.set()
    return time.monotonic() - start, error


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _separable_batches(count: int, size: int = 32, classes: int = 4, seed: int = 0):
    """(images (size,3,32,32) 0-255, labels) whose class shows in the mean colour: learnt in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0], [0.0, -1.0, 1.0], [1.0, 1.0, -1.0]])[:classes]
    batches = []
    for _ in range(count):
        labels = torch.randint(0, classes, (size,), generator=generator)
        noise = torch.randn(size, 3, 32, 32, generator=generator)
        images = (128 + 30 * noise + 50 * colours[labels][:, :, None, None]).clamp(0, 255)
        batches.append((images, labels))
    return batches


def _train_classifier(model: nn.Module, batches, amp: bool, device: torch.device):
    """SGD through the project's Trainer; returns (trainer, per-iteration total_loss, dtypes of the logits)."""
    from resdet.engine import ClassificationLoss, Trainer
    from resdet.solver import build_optimizer

    cfg = resdet.get_cfg()
    cfg.SOLVER.BASE_LR, cfg.SOLVER.MOMENTUM = 0.05, 0.9
    cfg.SOLVER.WEIGHT_DECAY = cfg.SOLVER.WEIGHT_DECAY_NORM = 0.0
    trainer = Trainer(model, batches, build_optimizer(cfg, model), ClassificationLoss(device), amp=amp)
    dtypes = set()
    handle = model.fc.register_forward_hook(lambda module, inputs, output: dtypes.add(output.dtype))
    try:
        trainer.train(0, len(batches))
    finally:
        handle.remove()
    return trainer, [value for _, value in trainer.storage.history("total_loss")], dtypes


def _spread_layers(targets, run) -> None:
    """Redraw each layer of `targets` {layer: output std} so that its outputs on run()'s inputs spread with that std
    (random heads score every box and class alike, so that rounding alone would reorder them)."""
    squares = {layer: [] for layer in targets}
    handles = [layer.register_forward_pre_hook(lambda module, inputs: squares[module].append(inputs[0].pow(2).mean()))
               for layer in targets]
    try:
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer, std in targets.items():
            input_rms = float(torch.stack(squares[layer]).float().mean().sqrt())
            scale = std / (input_rms * layer.weight[0].numel() ** 0.5)
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * scale)
            layer.bias.zero_()


def _matched_fraction(reference: dict, other: dict, min_iou: float, max_score_diff: float, top: int = 50) -> float:
    """Share of `reference`'s `top` best detections that `other` has too: same label, IoU >= min_iou, score within
    max_score_diff."""
    from torchvision.ops import box_iou

    order = np.argsort(-reference["scores"], kind="stable")[:top]
    if len(order) == 0 or len(other["scores"]) == 0:
        return 0.0
    ious = box_iou(torch.as_tensor(reference["boxes"][order]), torch.as_tensor(other["boxes"])).numpy()
    same_label = reference["labels"][order][:, None] == other["labels"][None, :]
    close = np.abs(reference["scores"][order][:, None] - other["scores"][None, :]) <= max_score_diff
    return float(((ious >= min_iou) & same_label & close).any(axis=1).mean())


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
    """resdet/modeling/detector/roi_align.py roi_align_levels: CUDA maps go to torchvision's kernel level by level
    (pool_by_level), CPU ones may take the sparse product; forward, backward and fp16 inputs agree."""
    from resdet.modeling.detector.roi_align import roi_align_levels, sparse_roi_align_levels

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


# ---------------------------------------------------------------- two GPUs: one NCCL job, several checks

BATCH = 8


def _ddp_model() -> nn.Module:
    """No batch statistics (GroupNorm), so that its gradient on the whole batch is the mean of the halves'."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(16, 5))


def _ddp_batch():
    generator = torch.Generator().manual_seed(3)
    return torch.randn(BATCH, 3, 8, 8, generator=generator), torch.randint(0, 5, (BATCH,), generator=generator)


SYNCBN_WEIGHT = torch.linspace(0.5, 2.0, 6)
SYNCBN_BIAS = torch.linspace(-1.0, 1.0, 6)


def _syncbn_inputs():
    """(x (8,6,5,5), upstream gradient): the second half shifted and scaled, so per-half statistics are far off."""
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(BATCH, 6, 5, 5, generator=generator)
    x[BATCH // 2:] = 3 * x[BATCH // 2:] + 2
    return x, torch.randn(BATCH, 6, 5, 5, generator=generator)


def _nccl_job(out_dir: str) -> None:
    """One process of a 2-process job started by `launch`: what each NCCL path gives, saved for the tests."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from resdet.engine import ClassificationLoss, comm, prepare_model
    from resdet.engine.rng import RNGStates
    from resdet.modeling.backbone.resnet import get_norm

    _write_pid(out_dir)
    rank, world_size = comm.get_rank(), comm.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device())
    half = BATCH // world_size
    shard = slice(rank * half, (rank + 1) * half)
    result = {"rank": rank, "world_size": world_size, "local_rank": comm.get_local_rank(),
              "backend": str(dist.get_backend()), "device_index": device.index,
              "async_error_handling": {name: os.environ.get(name) for name in ASYNC_ERROR_VARS}}
    with _fp32_without_tf32():
        comm.synchronize()  # a barrier on this rank's device
        result["max_over_ranks"] = comm.max_over_ranks(10 * rank + 1)
        result["all_gather"] = comm.all_gather({"rank": rank})
        result["gather"] = comm.gather(rank)
        result["reduced"] = comm.reduce_loss_dict({"a": torch.tensor(float(rank), device=device),
                                                   "b": torch.tensor(2.0 * rank + 1, device=device)})

        model = _ddp_model().to(device)
        wrapped = prepare_model(model)
        result["ddp_wrapped"] = isinstance(wrapped, DistributedDataParallel)
        images, labels = _ddp_batch()
        losses = ClassificationLoss(device)(wrapped, (images[shard], labels[shard]))
        losses["loss_cls"].backward()
        result["ddp_grads"] = {name: param.grad.detach().cpu() for name, param in model.named_parameters()}
        result["ddp_reduced_loss"] = comm.reduce_loss_dict(losses)["loss_cls"]

        x, upstream = _syncbn_inputs()
        norm = get_norm("SyncBN", x.shape[1]).to(device)
        with torch.no_grad():
            norm.weight.copy_(SYNCBN_WEIGHT)
            norm.bias.copy_(SYNCBN_BIAS)
        local = x[shard].to(device).requires_grad_()
        out = norm(local)
        (out * upstream[shard].to(device)).sum().backward()
        result["syncbn"] = {"type": type(norm).__name__, "y": out.detach().cpu(), "x_grad": local.grad.cpu(),
                            "weight_grad": norm.weight.grad.cpu(), "bias_grad": norm.bias.grad.cpu(),
                            "running_mean": norm.running_mean.cpu(), "running_var": norm.running_var.cpu()}

        torch.cuda.manual_seed(100 + rank)
        torch.rand(3, device=device)
        result["own_cuda_rng"] = torch.cuda.get_rng_state()
        result["gathered_cuda_rng"] = [state.get("cuda") for state in RNGStates().state_dict()["per_rank"]]
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    comm.synchronize()


@pytest.fixture(scope="module")
def nccl_job(tmp_path_factory):
    """Both ranks' results of one 2-process job on 2 GPUs, launched without TORCH_NCCL_ASYNC_ERROR_HANDLING set."""
    if GPUS < 2:
        pytest.skip(NOT_TWO_GPUS)
    out = tmp_path_factory.mktemp("nccl_job")
    with pytest.MonkeyPatch.context() as patch:
        for name in ASYNC_ERROR_VARS:
            patch.delenv(name, raising=False)
        seconds, error = _launch_with_deadline(_nccl_job, (str(out),), out, JOB_DEADLINE_S)
    if error is not None:
        pytest.fail(f"the 2-process NCCL job failed after {seconds:.0f} s: {error!r}")
    return [torch.load(out / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


@pytest.mark.gpu
@needs_two_gpus
def test_nccl_job_runs_one_process_per_gpu(nccl_job):
    """resdet/engine/launch.py launch/_worker: NCCL with CUDA, rank r on GPU r (torch.cuda.set_device)."""
    for rank, result in enumerate(nccl_job):
        assert result["rank"] == result["local_rank"] == result["device_index"] == rank
        assert result["world_size"] == 2 and result["backend"] == "nccl"


@pytest.mark.gpu
@needs_two_gpus
def test_launcher_sets_nccl_async_error_handling(nccl_job):
    """The launcher sets TORCH_NCCL_ASYNC_ERROR_HANDLING=1 in NCCL processes (before their process group exists),
    so that a failed or timed-out collective ends the process instead of hanging it."""
    for result in nccl_job:
        assert result["async_error_handling"]["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1", result["async_error_handling"]


@pytest.mark.gpu
@needs_two_gpus
def test_comm_helpers_on_nccl(nccl_job):
    """resdet/engine/comm.py on NCCL: synchronize (barrier with device_ids), max_over_ranks (a CUDA tensor),
    all_gather / gather (objects through the current device), reduce_loss_dict (CUDA losses)."""
    for rank, result in enumerate(nccl_job):
        assert result["max_over_ranks"] == 11
        assert result["all_gather"] == [{"rank": 0}, {"rank": 1}]
        assert result["gather"] == ([0, 1] if rank == 0 else [])
        assert result["reduced"] == pytest.approx({"a": 0.5, "b": 2.0})


@pytest.mark.gpu
@needs_two_gpus
def test_ddp_gradients_over_two_nccl_processes_equal_one_process(nccl_job):
    """resdet/engine/trainer.py prepare_model: DistributedDataParallel with device_ids on NCCL averages the halves'
    gradients into the whole batch's."""
    from resdet.engine import ClassificationLoss

    with _fp32_without_tf32():
        model = _ddp_model().cuda()
        loss = ClassificationLoss(torch.device("cuda"))(model, _ddp_batch())["loss_cls"]
        loss.backward()
    expected = {name: param.grad.cpu() for name, param in model.named_parameters()}
    for result in nccl_job:
        assert result["ddp_wrapped"]
        assert result["ddp_reduced_loss"] == pytest.approx(loss.item(), rel=1e-5)
        for name, grad in expected.items():
            assert grad.abs().max() > 0, name
            torch.testing.assert_close(result["ddp_grads"][name], grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max()))


@pytest.mark.gpu
@needs_two_gpus
def test_syncbn_over_two_nccl_processes_equals_batchnorm_over_the_whole_batch(nccl_job):
    """resdet/modeling/backbone/resnet.py get_norm("SyncBN"): statistics, outputs, input gradients and running
    statistics over both processes' halves are BatchNorm's over the concatenated batch (float64, on the CPU); the
    scale and shift gradients are per-process parts that DDP sums."""
    x, upstream = _syncbn_inputs()
    norm = nn.BatchNorm2d(x.shape[1]).double()
    with torch.no_grad():
        norm.weight.copy_(SYNCBN_WEIGHT)
        norm.bias.copy_(SYNCBN_BIAS)
    inputs = x.double().requires_grad_()
    expected = norm(inputs)
    (expected * upstream.double()).sum().backward()

    parts = [result["syncbn"] for result in nccl_job]
    assert {part["type"] for part in parts} == {"SyncBatchNorm"}
    tolerance = {"rtol": 1e-4, "atol": 1e-4}
    torch.testing.assert_close(torch.cat([p["y"] for p in parts]).double(), expected.detach(), **tolerance)
    torch.testing.assert_close(torch.cat([p["x_grad"] for p in parts]).double(), inputs.grad, **tolerance)
    torch.testing.assert_close((parts[0]["weight_grad"] + parts[1]["weight_grad"]).double(), norm.weight.grad,
                               **tolerance)
    torch.testing.assert_close((parts[0]["bias_grad"] + parts[1]["bias_grad"]).double(), norm.bias.grad, **tolerance)
    for part in parts:
        torch.testing.assert_close(part["running_mean"].double(), norm.running_mean, **tolerance)
        torch.testing.assert_close(part["running_var"].double(), norm.running_var, **tolerance)
    # the check can fail: normalising each half by its own statistics gives something else
    local = F.batch_norm(x[BATCH // 2:].double(), None, None, norm.weight.detach(), norm.bias.detach(), True)
    assert (local - expected[BATCH // 2:].detach()).abs().max() > 0.1


@pytest.mark.gpu
@needs_two_gpus
def test_rng_states_gather_every_ranks_cuda_generator(nccl_job):
    """resdet/engine/rng.py RNGStates.state_dict on NCCL: each rank's CUDA generator, gathered for the checkpoint."""
    own = [result["own_cuda_rng"] for result in nccl_job]
    assert not torch.equal(own[0], own[1])
    for result in nccl_job:
        assert len(result["gathered_cuda_rng"]) == 2
        for gathered, state in zip(result["gathered_cuda_rng"], own):
            assert torch.equal(gathered, state)


# ---------------------------------------------------------------- two GPUs: a rank that dies


def _die_after_first_collective(out_dir: str) -> None:
    """Rank 1 exits abruptly once the ranks have talked; rank 0 then waits in collectives that cannot finish."""
    import torch.distributed as dist

    from resdet.engine import comm

    _write_pid(out_dir)
    tensor = torch.ones(1, device=torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(tensor)
    torch.cuda.synchronize()
    if comm.get_rank() == 1:
        Path(out_dir, "rank1_exiting").touch()
        os._exit(3)
    Path(out_dir, "rank0_waiting").touch()
    deadline = time.monotonic() + 2 * DEAD_RANK_LIMIT_S
    while time.monotonic() < deadline:
        dist.all_reduce(tensor)
        torch.cuda.synchronize()
    Path(out_dir, "rank0_survived").touch()


@pytest.mark.gpu
@needs_two_gpus
def test_spawned_nccl_job_ends_when_a_rank_exits_abruptly(tmp_path):
    """resdet/engine/launch.py launch: a spawned rank that exits with status 3 while its peer waits in a NCCL
    collective ends the whole job, which reports the failure."""
    seconds, error = _launch_with_deadline(_die_after_first_collective, (str(tmp_path),), tmp_path, JOB_DEADLINE_S)
    assert (tmp_path / "rank1_exiting").exists() and (tmp_path / "rank0_waiting").exists(), repr(error)
    assert seconds < DEAD_RANK_LIMIT_S, f"the job took {seconds:.0f} s to end after rank 1 died"
    # the launcher's report of a failed process (torch's ProcessExitedException, or resdet's ProcessFailed)
    assert type(error).__name__ in ("ProcessFailed", "ProcessExitedException", "ProcessRaisedException"), repr(error)
    assert getattr(error, "exit_status", getattr(error, "exit_code", 1)) != 0, repr(error)
    assert not (tmp_path / "rank0_survived").exists()


@pytest.mark.gpu
@needs_two_gpus
def test_killed_rank_ends_a_torchrun_style_job_after_dist_timeout(toy_datasets, tmp_path):
    """Two tools/train_cls.py processes with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)
    and nothing supervising them, as on two machines: rank 1 is killed mid-training; with DIST.TIMEOUT 15 and
    TORCH_NCCL_ASYNC_ERROR_HANDLING (set by the launcher) rank 0 ends within 60 s with a non-zero status instead of
    waiting in its collective for good."""
    cfg = resdet.get_cfg()
    if "DIST" not in cfg or "TIMEOUT" not in cfg.DIST:
        pytest.fail("the config has no DIST.TIMEOUT key: a NCCL collective whose peer died waits 30 minutes")
    out = tmp_path / "out"
    args = [sys.executable, str(REPO / "tools" / "train_cls.py"), "--config", "configs/toy_cls_r18.yaml",
            "MODEL.DEVICE", "cuda", "DIST.TIMEOUT", "15", "DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "8",
            "INPUT.CROP.SIZE", "32", "DATASETS.TEST", "()", "SEED", "0", "SOLVER.CHECKPOINT_PERIOD", "1000000",
            "SOLVER.MAX_ITER", "1000000", "OUTPUT_DIR", str(out)]
    env = {name: value for name, value in os.environ.items() if name not in ASYNC_ERROR_VARS}
    env.update(RESDET_DATASETS=str(toy_datasets), OMP_NUM_THREADS="2", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    processes = []
    try:
        for rank in range(2):
            console = open(tmp_path / f"console{rank}.txt", "w")  # files: a full pipe would stall a rank
            processes.append(subprocess.Popen(args, cwd=REPO, env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)),
                                              stdout=console, stderr=subprocess.STDOUT, start_new_session=True))
            console.close()
        logs = [out / "log.txt", out / "log.txt.rank1"]
        deadline = time.monotonic() + JOB_DEADLINE_S
        while not all(log.exists() and "training from iteration" in log.read_text() for log in logs):
            ended = [rank for rank, process in enumerate(processes) if process.poll() is not None]
            assert not ended and time.monotonic() < deadline, _consoles(tmp_path, "before training started")
            time.sleep(0.5)
        time.sleep(3)  # a few iterations, so that rank 0 is inside the training loop's collectives
        assert processes[0].poll() is None, _consoles(tmp_path, "rank 0 ended before rank 1 was killed")
        os.killpg(processes[1].pid, signal.SIGKILL)
        try:
            status = processes[0].wait(timeout=DEAD_RANK_LIMIT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(_consoles(tmp_path, f"rank 0 still running {DEAD_RANK_LIMIT_S} s after rank 1 was killed"))
        assert status != 0, _consoles(tmp_path, "rank 0 exited with status 0")
    finally:
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _consoles(folder: Path, message: str) -> str:
    tails = [f"--- rank {rank}:\n" + (folder / f"console{rank}.txt").read_text(errors="replace")[-2500:]
             for rank in range(2) if (folder / f"console{rank}.txt").exists()]
    return "\n".join([message, *tails])
