"""The resdet model exported to ONNX (resdet.deploy) in an onnxruntime session: what tools/benchmark.py --compare
onnxruntime times beside eager resdet, on the same batches."""
import tempfile
from typing import Callable

import onnxruntime
import torch
from torch import nn

from resdet.checkpoint.meta import num_classes
from resdet.deploy.export import INPUT_NAME, export_model


def onnxruntime_session(cfg, model: nn.Module, threads: int) -> onnxruntime.InferenceSession:
    """The model (eval, its weights as they are) exported to ONNX in a session on `threads` threads."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # one graph runs at a time, as in eager mode
    with tempfile.TemporaryDirectory() as folder:
        path = export_model(model.eval(), cfg, "onnx", folder, [str(i) for i in range(num_classes(cfg))])
        return onnxruntime.InferenceSession(path, options)  # the file is read here, before the folder goes


def onnxruntime_step(session: onnxruntime.InferenceSession, detector: bool) -> Callable[[object], int]:
    """One run of a benchmark batch: a Classifier's (images, labels) at once, a detector's images one by one (its
    graph takes one image; the benchmark's synthetic ones are at the test size already, so they are not resized)."""
    def step(batch) -> int:
        if not detector:
            session.run(None, {INPUT_NAME: batch[0].cpu().numpy()})
            return len(batch[0])
        for item in batch:
            session.run(None, {INPUT_NAME: item["image"][None].to("cpu", torch.float32).numpy()})
        return len(batch)
    return step
