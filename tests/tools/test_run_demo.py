"""tools/run_demo.py (`make demo`, `make demo-compare`) end to end with a 4-iteration schedule on the toy data
with validation splits cut to 8 images (so that the evaluations take seconds), and its data stamp."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import matplotlib.image
import pytest
import yaml

from resdet.data.datasets import TOY_CLASSES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VAL_IMAGES = 8
QUICK = ["SOLVER.MAX_ITER", "4", "SOLVER.STEPS", "(3,)", "SOLVER.WARMUP_ITERS", "1", "SOLVER.IMS_PER_BATCH", "2",
         "SOLVER.CHECKPOINT_PERIOD", "100", "TEST.EVAL_PERIOD", "0", "DATALOADER.NUM_WORKERS", "0"]
DEMO_KEYS = {"cls_top1", "cls_top1_grayscale", "cls_top1_hue90", "det_AP", "det_AP50", "det_voc07", "seconds"}
# What _small_toy_data writes itself; everything else is linked to the shared fixture's files.
CUT = ("cls/val", "coco/annotations/instances_val.json", "voc/VOC2007/ImageSets/Main/test.txt")


def _load_driver():
    spec = importlib.util.spec_from_file_location("run_demo", os.path.join(REPO, "tools", "run_demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _link_all_but_cut(source, target, prefix=""):
    """Mirror `source` in `target`: folders leading to a CUT path are made, everything else is one link."""
    target.mkdir()
    for child in source.iterdir():
        path = prefix + child.name
        if path in CUT:
            continue
        if any(cut.startswith(path + "/") for cut in CUT):
            _link_all_but_cut(child, target / child.name, path + "/")
        else:
            (target / child.name).symlink_to(child)


def _small_toy_data(source, target):
    """The toy data with 2 images per class in cls/val and the first VAL_IMAGES scenes in coco val and VOC test."""
    _link_all_but_cut(source, target)
    for folder in (source / "cls" / "val").iterdir():
        (target / "cls" / "val" / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:2]:
            (target / "cls" / "val" / folder.name / image.name).symlink_to(image)
    coco = json.loads((source / "coco" / "annotations" / "instances_val.json").read_text())
    coco["images"] = coco["images"][:VAL_IMAGES]
    kept = {image["id"] for image in coco["images"]}
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] in kept]
    (target / "coco" / "annotations" / "instances_val.json").write_text(json.dumps(coco))
    test_split = "voc/VOC2007/ImageSets/Main/test.txt"
    ids = (source / test_split).read_text().splitlines()[:VAL_IMAGES]
    (target / test_split).write_text("\n".join(ids) + "\n")


@pytest.fixture(scope="module")
def small_datasets(toy_datasets, tmp_path_factory):
    """A RESDET_DATASETS root with the small toy data, stamped as current for seed 0 (the driver keeps it)."""
    root = tmp_path_factory.mktemp("demo_datasets")
    _small_toy_data(toy_datasets / "toy", root / "toy")
    _load_driver().write_data_stamp(str(root / "toy"), 0)
    return root


def run_driver(datasets, output, *args):
    env = dict(os.environ, RESDET_DATASETS=str(datasets), DEMO_OUTPUT=str(output),
               OMP_NUM_THREADS="1")  # tiny compute: a second thread only contends with other jobs
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "run_demo.py"), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def demo_output(small_datasets, tmp_path_factory):
    """The output folder of one quick `make demo`."""
    output = tmp_path_factory.mktemp("demo") / "out"
    result = run_driver(small_datasets, output, *QUICK)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    for number, name in enumerate(["Making the toy data", "Pretraining the classifier", "Training the detector",
                                   "Evaluating the detector", "Drawing detections", "Summary"], start=1):
        assert f"[{number}/6] {name}" in result.stdout
    assert "reused" in result.stdout  # the stamped data are not written again
    assert re.search(r"4/4 \[\d\d:\d\d<\d\d:\d\d", result.stderr)  # the tools' progress bars, with ETA
    return output


def test_demo_writes_summary_pictures_and_curves(demo_output):
    summary = json.loads((demo_output / "summary.json").read_text())
    assert set(summary) == DEMO_KEYS | {"det_per_class", "det_best"}
    assert all(isinstance(summary[key], float) for key in DEMO_KEYS)
    # the per-class table: each toy class's COCO AP (results.json) and VOC07 AP50, and the best checkpoint's record
    results = json.loads((demo_output / "det" / "eval" / "results.json").read_text())["bbox"]
    assert sorted(summary["det_per_class"]) == sorted(TOY_CLASSES)
    for name, row in summary["det_per_class"].items():
        assert row["AP"] == results[f"AP-{name}"] and set(row) == {"AP", "VOC07 AP50"}
    # one evaluation, at the end (after 4 iterations, as model_final.pth counts them): it is the best
    assert summary["det_best"] == {"best_metric": "bbox/AP", "best_value": summary["det_AP"], "best_iteration": 4}
    assert 0 <= summary["cls_top1"] <= 100 and 0 <= summary["det_AP50"] <= 100 and summary["seconds"] > 0
    assert len(list((demo_output / "vis").glob("*.png"))) >= 8
    image = matplotlib.image.imread(str(demo_output / "curves.png"))
    assert image.ndim == 3 and image.shape[1] > 2 * image.shape[0]  # three panels side by side
    rows = [json.loads(line) for line in (demo_output / "det" / "metrics.json").read_text().splitlines()]
    assert [row["iteration"] for row in rows if "eval/bbox/AP" in row] == [3]  # the AP curve's points


def test_compare_adds_scratch_and_reuses_pretrained_run(demo_output, small_datasets, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(demo_output, output)  # copy2 keeps the times that tell a reusable run
    models = [output / run / "model_final.pth" for run in ("cls", "det")]
    times = [model.stat().st_mtime_ns for model in models]
    curves_time = (output / "curves.png").stat().st_mtime_ns
    before = json.loads((output / "summary.json").read_text())
    result = run_driver(small_datasets, output, "--compare", *QUICK)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "[6/7] Training the detector from scratch" in result.stdout
    assert result.stdout.count("reused: the last make demo") == 4  # stages 2-5
    assert [model.stat().st_mtime_ns for model in models] == times
    assert (output / "curves.png").stat().st_mtime_ns > curves_time  # redrawn with the scratch curves
    summary = json.loads((output / "summary.json").read_text())
    assert set(summary) == DEMO_KEYS | {"det_per_class", "det_best", "scratch_AP", "scratch_AP50", "scratch_seconds"}
    assert {key: summary[key] for key in before} == before
    assert isinstance(summary["scratch_AP"], float) and isinstance(summary["scratch_AP50"], float)
    config = yaml.safe_load((output / "scratch" / "config.yaml").read_text())
    assert config["MODEL"]["BACKBONE"]["WEIGHTS"] == "" and config["SOLVER"]["MAX_ITER"] == 4


def test_failed_stage_is_one_line_without_traceback(small_datasets, tmp_path):
    result = run_driver(small_datasets, tmp_path / "out", *QUICK, "SOLVER.NO_SUCH_KEY", "1")
    assert result.returncode == 2
    assert "run_demo: error: tools/train_cls.py exited with status 2" in result.stderr
    assert "SOLVER.NO_SUCH_KEY" in result.stderr and "Traceback" not in result.stderr


def test_data_stamp_follows_seed_and_generator(tmp_path):
    driver = _load_driver()
    assert not driver.data_is_current(str(tmp_path), 0)
    driver.write_data_stamp(str(tmp_path), 0)
    assert driver.data_is_current(str(tmp_path), 0) and not driver.data_is_current(str(tmp_path), 1)
    stamp = json.loads((tmp_path / driver.DATA_STAMP).read_text())
    (tmp_path / driver.DATA_STAMP).write_text(json.dumps(dict(stamp, generator="an older generator")))
    assert not driver.data_is_current(str(tmp_path), 0)
