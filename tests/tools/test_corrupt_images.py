"""A truncated JPEG in a detection training set, black-box through tools/train_det.py: named and fatal by default,
skipped and counted with DATALOADER.SKIP_CORRUPT True."""
import json
import os

from test_train_det import CONFIG, FAST, run_tool  # tests/tools is on sys.path (pytest rootdir import)

from resdet.data import make_toy_data

SMALL = dict(cls_per_class={"train": 1, "val": 1}, det_images={"train": 6, "val": 2})


def _coco_with_one_truncated_image(root: str):
    """`coco:` names of a toy set whose first training image lost its second half; returns (train, val, file)."""
    shapes = make_toy_data(root, seed=3, **SMALL)
    images = json.load(open(f"{shapes}/coco/annotations/instances_train.json"))["images"]
    broken = os.path.join(shapes, "coco", "train", images[0]["file_name"])
    data = open(broken, "rb").read()
    with open(broken, "wb") as file:
        file.write(data[: len(data) // 2])
    train = f"coco:{shapes}/coco/annotations/instances_train.json:{shapes}/coco/train"
    val = f"coco:{shapes}/coco/annotations/instances_val.json:{shapes}/coco/val"
    return train, val, broken


def test_truncated_image_is_named_then_skipped_when_asked(tmp_path):
    train, val, broken = _coco_with_one_truncated_image(str(tmp_path / "shapes"))
    # every step draws 2 of the 6 images, so 9 steps certainly meet the broken one (each epoch holds every image)
    common = ["--config", CONFIG, *FAST, "SOLVER.MAX_ITER", "9", "DATASETS.TRAIN", f"('{train}',)",
              "DATASETS.TEST", f"('{val}',)", "DATALOADER.ASPECT_RATIO_GROUPING", "False"]
    failed = run_tool("train_det.py", [*common, "OUTPUT_DIR", str(tmp_path / "strict")], tmp_path / "none")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    assert os.path.basename(broken) in failed.stderr and "SKIP_CORRUPT" in failed.stderr

    out = str(tmp_path / "skip")
    skipped = run_tool("train_det.py", [*common, "DATALOADER.SKIP_CORRUPT", "True", "OUTPUT_DIR", out],
                       tmp_path / "none")
    assert skipped.returncode == 0, skipped.stderr[-3000:]
    log = open(os.path.join(out, "log.txt")).read()
    assert "1 unreadable images were skipped" in log and os.path.basename(broken) in log
    assert os.path.isfile(os.path.join(out, "model_final.pth"))
