"""tools/train_cls.py end to end: toy data on two gloo processes, resume, eval-only, CIFAR-10, missing data."""
import json
import os
import subprocess
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "train_cls.py")
FAST = ["DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "8", "SEED", "0"]


def run_tool(args, datasets_root, timeout=180):
    env = dict(os.environ, RESDET_DATASETS=str(datasets_root), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, TOOL, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def check(result):
    assert result.returncode == 0, result.stderr[-3000:]


def metrics_iterations(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as file:
        return [json.loads(line)["iteration"] for line in file]


def test_toy_two_processes_then_resume_then_eval_only(toy_datasets, tmp_path):
    out = str(tmp_path / "out")
    common = ["--config", "configs/toy_cls_r18.yaml", *FAST, "OUTPUT_DIR", out, "INPUT.CROP.SIZE", "32",
              "SOLVER.CHECKPOINT_PERIOD", "2"]
    # Evaluated once, by --eval-only below (tests/tools/test_every_config.py evaluates two processes with spawned
    # loader workers and the colour tests): each evaluation of the 1000 toy images costs seconds.
    check(run_tool(["--num-gpus", "2", *common, "SOLVER.MAX_ITER", "3", "DATASETS.TEST", "()"], toy_datasets))
    for name in ("config.yaml", "log.txt", "log.txt.rank1", "metrics.json", "model_0000002.pth", "model_final.pth"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert open(os.path.join(out, "last_checkpoint")).read() == "model_final.pth"
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(out))
    checkpoint = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    assert checkpoint["iteration"] == 3 and {"model", "optimizer", "scheduler"} <= set(checkpoint)
    assert metrics_iterations(out)[0] == 2

    check(run_tool(["--resume", *common, "SOLVER.MAX_ITER", "5", "DATASETS.TEST", "()"], toy_datasets))
    assert "training from iteration 3 to 5" in open(os.path.join(out, "log.txt")).read()
    assert 4 in metrics_iterations(out)
    assert torch.load(os.path.join(out, "model_final.pth"), weights_only=True)["iteration"] == 5

    # without the colour tests, a third of the time (test_every_config.py evaluates them on two processes)
    check(run_tool(["--eval-only", *common, "TEST.CLS_COLOUR_TESTS", "()"], toy_datasets))
    results = json.load(open(os.path.join(out, "eval", "results.json")))
    assert set(results) == {"top1", "top5"} and 0 <= results["top1"] <= results["top5"] <= 100


def test_cifar10_pickles(cifar10_root, tmp_path):
    out = str(tmp_path / "out")
    check(run_tool(["--config", "configs/cifar/resnet20.yaml", *FAST, "SOLVER.MAX_ITER", "3", "OUTPUT_DIR", out],
                   cifar10_root))
    results = json.load(open(os.path.join(out, "eval", "results.json")))
    assert 0 <= results["top1"] <= 100
    assert "cifar10_val5k" in open(os.path.join(out, "log.txt")).read()


def test_missing_imagenet_exits_fast_without_traceback(tmp_path):
    start = time.perf_counter()
    result = run_tool(["--config", "configs/r101_imagenet.yaml", "OUTPUT_DIR", str(tmp_path / "out")], tmp_path,
                      timeout=60)
    assert result.returncode == 2
    assert time.perf_counter() - start < 30
    assert os.path.join(str(tmp_path), "imagenet") in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unknown_key_exits_with_its_name(tmp_path):
    result = run_tool(["--config", "configs/toy_cls_r18.yaml", "SOLVER.NOT_A_KEY", "1"], tmp_path, timeout=60)
    assert result.returncode == 2
    assert "SOLVER.NOT_A_KEY" in result.stderr and "Traceback" not in result.stderr


def test_help():
    result = subprocess.run([sys.executable, TOOL, "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--config", "--resume", "--eval-only", "--num-gpus", "--num-machines", "--machine-rank",
                   "--dist-url", "KEY VALUE"):
        assert option in result.stdout
