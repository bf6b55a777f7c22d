"""tools/benchmark.py: the --json contract of every task, the torchvision reference really holds resdet's weights."""
import json
import os
import runpy
import subprocess
import sys

import pytest
import torch

from resdet import build_model
from resdet.config import setup_cfg

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "benchmark.py")
TOY_DET = os.path.join(REPO, "configs", "toy_frcnn_r18_fpn.yaml")
TOY_CLS = os.path.join(REPO, "configs", "toy_cls_r18.yaml")
SMALL_DET = ["MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "64", "INPUT.MIN_SIZE_TRAIN", "(64,)",
             "SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0"]
MODEL_KEYS = {"time_s", "min_s", "images_per_s", "peak_mem_mb"}
tool = runpy.run_path(TOOL)


@pytest.fixture(autouse=True)
def keep_thread_count():
    """main() applies --threads to this process; the rest of the suite keeps its own setting."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_json(capsys, *args) -> dict:
    assert tool["main"](["--json", "--threads", "1", *args]) == 0  # flags first: overrides take the rest
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])


def test_infer_against_torchvision_from_the_command_line():
    out = subprocess.run([sys.executable, TOOL, "--config", TOY_DET, "--task", "infer", "--compare", "torchvision",
                          "--iters", "1", "--warmup", "0", "--json", "--threads", "1", *SMALL_DET],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=True).stdout
    result = json.loads(out)
    assert {"task", "config", "device", "threads", "amp", "iters", "warmup", "batch_size", "input_size",
            "resdet", "torchvision", "ratio", "proposals", "peak_rss_mb"} <= set(result)
    assert result["task"] == "infer" and result["batch_size"] == 1 and result["input_size"] == [64, 85]
    assert set(result["resdet"]) == MODEL_KEYS and set(result["torchvision"]) == MODEL_KEYS
    assert result["ratio"] == pytest.approx(result["resdet"]["time_s"] / result["torchvision"]["time_s"])
    # the same weights and thresholds: both RPNs keep the same number of proposals
    assert result["proposals"]["resdet"] == result["proposals"]["torchvision"] > 0


def test_train_step_of_a_detector_and_a_classifier(capsys):
    det = run_json(capsys, "--config", TOY_DET, "--task", "train", "--compare", "torchvision", "--iters", "1",
                   "--warmup", "0", *SMALL_DET)
    assert det["batch_size"] == 2 and det["resdet"]["images_per_s"] > 0 and det["torchvision"]["time_s"] > 0
    cls = run_json(capsys, "--config", TOY_CLS, "--task", "train", "--iters", "1", "--warmup", "0", "--batch", "4",
                   "--amp", "MODEL.DEVICE", "cpu")
    assert cls["batch_size"] == 4 and cls["amp"] and "torchvision" not in cls and "ratio" not in cls
    assert cls["resdet"]["peak_mem_mb"] > 0  # the RSS high-water mark on the CPU


def test_data_and_eval_on_the_toy_sets(capsys, toy_datasets, monkeypatch):
    monkeypatch.setenv("RESDET_DATASETS", str(toy_datasets))
    data = run_json(capsys, "--config", TOY_DET, "--task", "data", "--workers", "0,2", "--images", "6", "--parse",
                    *SMALL_DET)
    (parse,) = data["parse"]
    assert parse["dataset"] == "toy_coco_train" and parse["json_mb"] > 0
    assert parse["json_load_s"] > 0 and parse["records_first_s"] > 0 and parse["records_cached_s"] > 0
    rows = data["loader"]
    assert [row["workers"] for row in rows] == [0, 2] and data["num_gpus"] == 1
    for row in rows:  # each worker count measured in a fresh process that loaded the records itself
        assert row["records"] == 1000 and row["images_per_process"] >= 6 and row["images_per_s"] > 0
        assert 0 <= row["records_s"] <= row["first_batch_s"]
        # the tree's PSS: this process alone holds torch (over 100 MiB); 2 forked workers add to it
        assert 100 < row["pss_first_mb"] and 100 < row["pss_end_mb"]
    assert rows[1]["pss_first_mb"] > rows[0]["pss_first_mb"]
    evaluation = run_json(capsys, "--config", TOY_CLS, "--task", "eval", "--compare", "torchvision", "--iters", "2",
                          "--warmup", "0", "MODEL.DEVICE", "cpu", "SOLVER.IMS_PER_BATCH", "8",
                          "DATALOADER.NUM_WORKERS", "0")
    assert evaluation["dataset"] == "toy_cls_val" and evaluation["ratio"] > 0
    assert evaluation["resdet"]["images_per_s"] > 0


def test_eval_times_coco_evaluation_with_each_backend(capsys):
    pytest.importorskip("faster_coco_eval")
    result = run_json(capsys, "--config", TOY_DET, "--task", "eval", "--coco-images", "30", "--detections", "20",
                      "--iters", "2", "TEST.COCO_EVAL_BACKEND", "faster_coco_eval")
    assert result["images"] == 30 and result["detections_per_image"] == 20 and result["dataset"] == "synthetic"
    assert result["iters"] == 2 and result["warmup"] == 0 and result["coco_eval_backend"] == "faster_coco_eval"
    assert set(result["pycocotools"]) == MODEL_KEYS and set(result["faster_coco_eval"]) == MODEL_KEYS
    assert result["coco_eval_speedup"] == pytest.approx(result["pycocotools"]["time_s"]
                                                        / result["faster_coco_eval"]["time_s"])
    reference = result["bbox"]["pycocotools"]
    assert set(reference) == {"AP", "AP50", "AP75", "APs", "APm", "APl"} and 0 < reference["AP"] < 100
    assert result["bbox"]["faster_coco_eval"] == pytest.approx(reference, abs=1e-4)
    assert "resdet" not in result  # no model was built


def test_eval_without_faster_coco_eval_times_pycocotools_alone(capsys, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "faster_coco_eval", None)  # as if it were not installed
    result = run_json(capsys, "--config", TOY_DET, "--task", "eval", "--coco-images", "5", "--detections", "5")
    assert result["pycocotools"]["time_s"] > 0 and "faster_coco_eval" not in result
    assert "coco_eval_speedup" not in result and "pip install 'faster-coco-eval" in caplog.text


def test_torchvision_classifier_computes_the_resdet_function():
    """Weights copied key by key, the stride moved to the 1x1 convs: the same logits as resdet's model."""
    cfg = setup_cfg(os.path.join(REPO, "configs", "r50_imagenet.yaml"), ["MODEL.DEVICE", "cpu",
                                                                         "MODEL.CLASSIFIER.NUM_CLASSES", "10"])
    torch.manual_seed(0)
    ours = build_model(cfg).eval()
    for module in ours.modules():  # non-trivial statistics, so that the norms are checked too
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    reference = tool["torchvision_classifier"](cfg, ours).eval()
    images = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        torch.testing.assert_close(reference(images), ours(images), rtol=1e-4, atol=1e-4)


def test_infer_in_onnxruntime_beside_eager(capsys):
    result = run_json(capsys, "--config", TOY_CLS, "--task", "infer", "--compare", "onnxruntime", "--iters", "1",
                      "--warmup", "0", "MODEL.DEVICE", "cpu")
    assert set(result["onnxruntime"]) == MODEL_KEYS and result["onnxruntime"]["images_per_s"] > 0
    assert result["onnxruntime_ratio"] == pytest.approx(result["onnxruntime"]["time_s"] / result["resdet"]["time_s"])
    assert "torchvision" not in result and "ratio" not in result


def test_unsupported_comparisons_are_refused(capsys):
    with pytest.raises(SystemExit):
        tool["parse_args"](["--config", TOY_DET, "--task", "data", "--compare", "torchvision"])
    for task in ("train", "eval"):
        with pytest.raises(SystemExit):
            tool["parse_args"](["--config", TOY_DET, "--task", task, "--compare", "onnxruntime"])
    for misuse in (["--task", "infer", "--coco-images", "5"], ["--task", "eval", "--detections", "5"],
                   ["--task", "eval", "--coco-images", "5", "--compare", "torchvision"],
                   ["--task", "eval", "--coco-images", "0"]):
        with pytest.raises(SystemExit):
            tool["parse_args"](["--config", TOY_DET, *misuse])
    cifar = os.path.join(REPO, "configs", "cifar", "resnet20.yaml")
    with pytest.raises(ValueError, match="MODEL.BACKBONE.NAME"):
        tool["main"](["--config", cifar, "--task", "infer", "--compare", "torchvision", "--iters", "1",
                      "--warmup", "0", "MODEL.DEVICE", "cpu"])


def test_infer_on_a_batch_of_images(capsys):
    result = run_json(capsys, "--config", TOY_DET, "--task", "infer", "--compare", "torchvision", "--batch", "2",
                      "--iters", "1", "--warmup", "0", *SMALL_DET)
    assert result["batch_size"] == 2 and result["resdet"]["images_per_s"] > 0
    assert result["proposals"]["resdet"] == result["proposals"]["torchvision"] > 0


def test_suite_and_when_quiet_options(capsys, monkeypatch):
    """--suite stands instead of --config/--task; --when-quiet waits for a load below 0.5 (a fake load here)."""
    assert tool["parse_args"](["--suite", "acceptance"]).suite == "acceptance"
    for misuse in (["--suite", "acceptance", "--config", TOY_DET], ["--task", "infer"], []):
        with pytest.raises(SystemExit):
            tool["parse_args"](misuse)
    suites = runpy.run_path(os.path.join(REPO, "tools", "benchmark_suites.py"))
    loads = iter([0.9, 0.9, 0.3, 0.3])
    monkeypatch.setattr(os, "getloadavg", lambda: (next(loads), 0.0, 0.0))
    assert suites["wait_until_quiet"](poll_s=0) == 0.3  # polled until the load fell below 0.5
    assert "when_quiet: load before 0.30" in capsys.readouterr().err
    calls = []
    median = suites["interleaved"](lambda: calls.append("a"), lambda: calls.append("b"), runs=2, warmup=1)
    assert calls == ["a", "b"] * 3 and all(seconds >= 0 for seconds in median)
