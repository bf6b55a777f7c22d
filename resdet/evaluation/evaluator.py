"""The evaluator interface, the detection inference loop, and the results file every evaluator writes."""
import json
import logging
import math
import os
import time
from typing import Any, Dict, List

import torch
from tabulate import tabulate
from torch import nn

from ..engine import comm

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


class DatasetEvaluator:
    """Accumulates predictions with `process` and turns them into metrics with `evaluate`."""

    def reset(self) -> None:
        """Forget every prediction seen so far."""

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        """Record the model's `outputs` for one batch of `inputs`."""
        raise NotImplementedError

    def evaluate(self) -> Dict[str, Any]:
        """Metrics over everything processed; on other ranks than 0 of a distributed run, {}."""
        raise NotImplementedError


class DatasetEvaluators(DatasetEvaluator):
    """Several evaluators fed the same batches; their metrics merged (each under its own top-level keys)."""

    def __init__(self, evaluators: List[DatasetEvaluator]):
        self.evaluators = list(evaluators)

    def reset(self) -> None:
        for evaluator in self.evaluators:
            evaluator.reset()

    def process(self, inputs: List[dict], outputs: List[dict]) -> None:
        for evaluator in self.evaluators:
            evaluator.process(inputs, outputs)

    def evaluate(self) -> Dict[str, Any]:
        results: Dict[str, Any] = {}
        for evaluator in self.evaluators:
            for key, value in (evaluator.evaluate() or {}).items():
                if key in results:
                    raise KeyError(f"DatasetEvaluators: two evaluators report {key!r}")
                results[key] = value
        return results


def gather_on_main(items: List[Any], distributed: bool = True) -> List[Any]:
    """Concatenate every rank's list on the main process; other ranks get [] back."""
    if not distributed or comm.get_world_size() == 1:
        return list(items)
    comm.synchronize()
    per_rank = comm.gather(items)  # only the main process receives: the others keep their own share only
    return [item for rank_items in per_rank for item in rank_items]


def json_safe(value: Any) -> Any:
    """NaN and infinities become None (JSON null), recursively through dicts and lists."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: str, data: Any) -> None:
    """Write `data` as strict JSON (NaN as null) through a temporary file, so readers never see half a file."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp_path = f"{path}.tmp"
    with open(tmp_path, "w") as f:
        json.dump(json_safe(data), f, allow_nan=False)
    os.replace(tmp_path, path)


def save_results(output_dir: str, results: Dict[str, Any]) -> str:
    """Merge `results` into OUTPUT_DIR/eval/results.json (top-level keys replaced) and return its path."""
    path = os.path.join(output_dir, "eval", RESULTS_FILE)
    merged = {}
    if os.path.isfile(path):
        try:
            with open(path) as f:
                merged = json.load(f)
        except json.JSONDecodeError as err:
            logger.warning("%s is not valid JSON (%s); overwriting it", path, err)
    merged.update(results)
    write_json(path, merged)
    return path


def per_class_table(per_class: Dict[str, Dict[str, float]]) -> str:
    """{class: {metric: value}} as a text table, a row per class and a column per metric (numbers in %, counts as
    integers), for the logs and the demo's summary."""
    columns = list(next(iter(per_class.values()), {}))
    rows = [[name, *(f"{v:.2f}" if isinstance(v, float) else v for v in values.values())]
            for name, values in per_class.items()]
    return tabulate(rows, headers=["class", *columns], tablefmt="pipe", disable_numparse=True)


def inference_on_dataset(model: nn.Module, data_loader, evaluator: DatasetEvaluator) -> Dict[str, Any]:
    """Run `model` in eval mode over `data_loader`, feed `evaluator`, log throughput, return its metrics."""
    total_batches = len(data_loader) if hasattr(data_loader, "__len__") else None
    # the first batches pay for allocation and caching; they are left out of the timing
    num_warmup = min(5, total_batches - 1) if total_batches else 0
    evaluator.reset()
    on_cuda = next(model.parameters(), torch.empty(0)).is_cuda
    was_training = model.training
    model.eval()
    num_images, timed_images, timed_seconds = 0, 0, 0.0
    start = time.perf_counter()
    try:
        with torch.inference_mode():
            for index, inputs in enumerate(data_loader):
                batch_start = time.perf_counter()
                outputs = model(inputs)
                if on_cuda:  # the timing waits for the device; a CPU model must not create a CUDA context
                    torch.cuda.synchronize()
                evaluator.process(inputs, outputs)
                num_images += len(inputs)
                if index >= num_warmup:
                    timed_seconds += time.perf_counter() - batch_start
                    timed_images += len(inputs)
                if (index + 1) % 50 == 0:
                    logger.info("Inference: batch %d/%s, %d images", index + 1, total_batches or "?", num_images)
    finally:
        model.train(was_training)
    total_seconds = time.perf_counter() - start
    logger.info("Inference on %d images took %.1f s (%.2f images/s per process, excluding %d warm-up batches)",
                num_images, total_seconds, timed_images / max(timed_seconds, 1e-9), num_warmup)
    return evaluator.evaluate() or {}
