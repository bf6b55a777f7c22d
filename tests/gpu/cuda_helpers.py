"""Helpers of the CUDA tests (tests/gpu/test_cuda_*.py): skip marks, fp32 without TF32, tiny configs and
datasets, tool runs, jobs with a deadline, matching detections."""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
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




@contextlib.contextmanager
def _fp32_without_tf32():
    """cudnn convolutions and CUDA matmuls in full fp32 (TF32 would round to 10 mantissa bits) while inside."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


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
