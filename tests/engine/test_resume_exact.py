"""Exact resume through the tools: N iterations straight equal N/2, then --resume to N, bit for bit (weights,
buffers, optimizer, schedule, every random generator, position in the data order), for the classifier and the
detector, under bf16 autocast on the CPU, with 0 and 2 DataLoader workers."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = 6
# A multi-step schedule with its step in the second half and a warmup in the first: the lr of the first N/2
# iterations does not depend on SOLVER.MAX_ITER (a cosine schedule's would), so the split run can be exact.
SCHEDULE = "SOLVER:\n  LR_SCHEDULER_NAME: WarmupMultiStepLR\n  STEPS: (4,)\n  WARMUP_ITERS: 2\n"
TOOLS = {
    "classifier": ("train_cls.py", "configs/toy_cls_r18.yaml", ["SOLVER.IMS_PER_BATCH", "8", "INPUT.CROP.SIZE", "32"]),
    "detector": ("train_det.py", "configs/toy_frcnn_r18_fpn.yaml", [
        "SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(80, 96, 112)", "INPUT.MAX_SIZE_TRAIN", "160",
        "MODEL.RPN.POST_NMS_TOPK_TRAIN", "128", "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64"]),
}


def train(tool, config, overrides, output_dir, max_iter, workers, datasets_root, resume=False):
    env = dict(os.environ, RESDET_DATASETS=str(datasets_root), OMP_NUM_THREADS="1")
    args = [sys.executable, os.path.join("tools", tool), *(["--resume"] if resume else []), "--config", config,
            *overrides, "DATALOADER.NUM_WORKERS", str(workers), "SEED", "0", "DATASETS.TEST", "()",
            "SOLVER.CHECKPOINT_PERIOD", "1000", "SOLVER.MAX_ITER", str(max_iter), "OUTPUT_DIR", str(output_dir)]
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def assert_identical(a, b, where="checkpoint"):
    """Equal structure and values; tensors bit for bit."""
    if torch.is_tensor(a):
        assert torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for index, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{index}]")
    else:
        assert a == b or (a != a and b != b), where  # NaN equals NaN here


@pytest.mark.parametrize("task,straight_workers,split_workers", [("classifier", 2, 0), ("detector", 0, 2)])
def test_half_then_resume_equals_straight(task, straight_workers, split_workers, toy_datasets, tmp_path):
    tool, base, overrides = TOOLS[task]
    config = tmp_path / "config.yaml"
    config.write_text(f'_BASE_: "{os.path.join(REPO, base)}"\n{SCHEDULE}')
    straight, split = tmp_path / "straight", tmp_path / "split"

    train(tool, config, overrides, straight, N, straight_workers, toy_datasets)
    train(tool, config, overrides, split, N // 2, split_workers, toy_datasets)
    shutil.copy(split / "model_final.pth", tmp_path / "half.pth")
    train(tool, config, overrides, split, N, split_workers, toy_datasets, resume=True)

    assert f"training from iteration {N // 2} to {N}" in (split / "log.txt").read_text()
    expected = torch.load(straight / "model_final.pth", weights_only=True)
    resumed = torch.load(split / "model_final.pth", weights_only=True)
    assert {"model", "optimizer", "scheduler", "rng", "data_loader", "iteration"} <= set(resumed)
    assert resumed["iteration"] == N and resumed["data_loader"]["batches"] == N
    assert_identical(expected, resumed)
    # The second half did train: the weights moved after the resume.
    half = torch.load(tmp_path / "half.pth", weights_only=True)["model"]
    assert any(not torch.equal(half[name], value) for name, value in resumed["model"].items())
