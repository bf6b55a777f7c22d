"""tools/benchmark.py --suite acceptance and --when-quiet: the speed comparison against torchvision that the README's
and BENCHMARKS.md's headline ratios come from, and the wait for a quiet machine every timing starts with.

The acceptance suite builds torchvision's fasterrcnn_resnet50_fpn (random weights, its FrozenBN statistics
calibrated on one forward pass so that ~1000 proposals survive, as with trained weights), loads the same weights into
configs/torchvision/frcnn_r50_fpn.yaml through resdet.load_weights, and times both in this process, interleaved, on
2 threads: inference on one 512x512 image, an SGD step (lr 0) on two with 5 boxes each, and a ResNet-50
classification step (batch 16 at 224) against torchvision's resnet50. resdet runs each in fp32 and under bf16
autocast; torchvision in fp32. Times are medians; *_ratio is resdet's time over torchvision's (lower is better).
"""
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F
import torchvision

import resdet

logger = logging.getLogger("resdet.benchmark")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 512
BOXES = torch.tensor([[10, 20, 200, 220], [50, 60, 300, 400], [100, 100, 180, 260], [300, 300, 500, 480],
                      [5, 5, 60, 90]], dtype=torch.float32)


def wait_until_quiet(max_load: float = 0.5, wait_s: float = 600, poll_s: float = 10) -> float:
    """Block until the 1-minute load average is below `max_load` (at most `wait_s` seconds, then go on with a warning
    saying so); returns the load when it starts."""
    started = time.monotonic()
    while os.getloadavg()[0] >= max_load:
        if time.monotonic() - started >= wait_s:
            logger.warning("load %.2f still >= %.2f after %.0f s; measuring anyway (say so beside the figures)",
                           os.getloadavg()[0], max_load, wait_s)
            break
        time.sleep(poll_s)
    load = os.getloadavg()[0]
    print(f"when_quiet: load before {load:.2f}", file=sys.stderr, flush=True)
    return load


def interleaved(ours: Callable[[], object], reference: Callable[[], object], runs: int,
                warmup: int) -> Tuple[float, float]:
    """Median seconds of `ours` and of `reference`, run one after the other `runs` times after `warmup` rounds."""
    for _ in range(warmup):
        ours(), reference()
    times = ([], [])
    for _ in range(runs):
        for timed, function in zip(times, (ours, reference)):
            start = time.perf_counter()
            function()
            timed.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def bf16() -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16)


def _smooth_image() -> torch.Tensor:
    """(3, 512, 512) in [0, 1]: blurred noise, so that the RPN sees edges at every scale."""
    generator = torch.Generator().manual_seed(1)
    image = F.avg_pool2d(torch.rand(1, 3, SIZE, SIZE, generator=generator), 9, 1, 4)[0]
    return (image - image.min()) / (image.max() - image.min())


def _detectors(calibrate: Callable) -> Tuple[torch.nn.Module, torch.nn.Module, torch.Tensor, torch.Tensor]:
    """torchvision's calibrated R50-FPN, resdet's with its weights, and the image for each (0-1 RGB; 0-255 in
    INPUT.FORMAT)."""
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                     num_classes=81, min_size=SIZE, max_size=SIZE)
    image = _smooth_image()
    calibrate(reference.backbone.body.eval(), lambda: reference.eval()([image]))
    cfg = resdet.get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "torchvision", "frcnn_r50_fpn.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.ROI_HEADS.NUM_CLASSES", 80, "INPUT.MIN_SIZE_TEST", SIZE,
                         "INPUT.MAX_SIZE_TEST", SIZE, "INPUT.MIN_SIZE_TRAIN", (SIZE,), "INPUT.MAX_SIZE_TRAIN", SIZE])
    ours = resdet.build_model(cfg).eval()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "torchvision_frcnn.pth")
        torch.save(reference.state_dict(), path)
        resdet.load_weights(ours, path)
    pixels = image * 255 if cfg.INPUT.FORMAT == "RGB" else (image * 255).flip(0)
    return ours, reference, image, pixels


def _sgd_step(model: torch.nn.Module, loss: Callable[[], torch.Tensor]) -> Callable[..., None]:
    """A step function: loss (under an optional autocast context), backward, SGD with lr 0 (every step does the same
    work)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)

    def step(context: Callable = contextlib.nullcontext) -> None:
        with context():
            value = loss()
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
    return step


def acceptance(calibrate: Callable) -> Dict[str, float]:
    """The acceptance suite (module docstring): times in seconds and *_ratio, rounded to 4 digits."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    out: Dict[str, float] = {}
    ours, reference, image, pixels = _detectors(calibrate)
    inputs = [{"image": pixels, "height": SIZE, "width": SIZE}]
    with torch.inference_mode():
        a, b = interleaved(lambda: ours(inputs), lambda: reference([image]), runs=5, warmup=2)
        out.update(infer_s=a, tv_infer_s=b, infer_ratio=a / b)

        def ours_bf16():
            with bf16():
                ours(inputs)
        a, b = interleaved(ours_bf16, lambda: reference([image]), runs=5, warmup=2)
        out.update(infer_bf16_s=a, infer_bf16_ratio=a / b)

    labels = torch.randint(0, 80, (len(BOXES),))
    batch = [{"image": pixels, "height": SIZE, "width": SIZE, "boxes": BOXES, "labels": labels}] * 2
    targets = [{"boxes": BOXES, "labels": labels + 1}] * 2  # torchvision's class 0 is the background
    ours.train(), reference.train()
    step_ours = _sgd_step(ours, lambda: sum(ours(batch).values()))
    step_reference = _sgd_step(reference, lambda: sum(reference([image, image], targets).values()))
    a, b = interleaved(step_ours, step_reference, runs=3, warmup=1)
    out.update(train_s=a, tv_train_s=b, train_ratio=a / b)
    a, b = interleaved(lambda: step_ours(bf16), step_reference, runs=3, warmup=1)
    out.update(train_bf16_s=a, train_bf16_ratio=a / b)

    cfg = resdet.get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "r50_imagenet.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu"])
    classifier, tv_classifier = resdet.build_model(cfg).train(), torchvision.models.resnet50().train()
    images, classes = torch.rand(16, 3, 224, 224), torch.randint(0, 1000, (16,))
    cls_ours = _sgd_step(classifier, lambda: F.cross_entropy(classifier(images * 255), classes))
    cls_reference = _sgd_step(tv_classifier, lambda: F.cross_entropy(tv_classifier(images), classes))
    a, b = interleaved(cls_ours, cls_reference, runs=3, warmup=1)
    out.update(cls_train_s=a, tv_cls_train_s=b, cls_train_ratio=a / b)
    a, b = interleaved(lambda: cls_ours(bf16), cls_reference, runs=3, warmup=1)
    out.update(cls_train_bf16_s=a, cls_train_bf16_ratio=a / b)
    return {key: round(value, 4) for key, value in out.items()}
