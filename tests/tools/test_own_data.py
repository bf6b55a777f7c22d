"""The README's "Train on your own data": the toy recipe pointed at another COCO-format shapes dataset through
`coco:<json>:<images>` names trains, evaluates and draws with no code change."""
import json
import os

from test_train_det import CONFIG, FAST, check, run_tool  # tests/tools is on sys.path (pytest rootdir import)

from resdet.data import make_toy_data

# another shapes world than the embedded one (another seed), written where a user keeps their data
SMALL = dict(cls_per_class={"train": 1, "val": 1}, det_images={"train": 12, "val": 6})


def test_toy_recipe_on_coco_json_folder(tmp_path):
    shapes = make_toy_data(str(tmp_path / "shop"), seed=7, **SMALL)
    train = f"coco:{shapes}/coco/annotations/instances_train.json:{shapes}/coco/train"
    val = f"coco:{shapes}/coco/annotations/instances_val.json:{shapes}/coco/val"
    out = str(tmp_path / "out")
    # RESDET_DATASETS points nowhere: only the coco: names can be read
    check(run_tool("train_det.py", ["--config", CONFIG, *FAST, "SOLVER.MAX_ITER", "6",
                                    "DATASETS.TRAIN", f"('{train}',)",
                                    "DATASETS.TEST", f"('{val}',)", "OUTPUT_DIR", out], tmp_path / "no_datasets"))
    results = json.load(open(os.path.join(out, "eval", "results.json")))["bbox"]
    names = [c["name"] for c in json.load(open(f"{shapes}/coco/annotations/instances_val.json"))["categories"]]
    # the six COCO numbers and the AP of each of the json's categories, by its name
    assert set(results) == {"AP", "AP50", "AP75", "APs", "APm", "APl", *(f"AP-{name}" for name in names)}
    detections = json.load(open(os.path.join(out, "eval", "coco_instances_results.json")))
    categories = {c["id"] for c in json.load(open(f"{shapes}/coco/annotations/instances_val.json"))["categories"]}
    assert detections and {d["category_id"] for d in detections} <= categories  # the json's own ids
    check(run_tool("demo.py", ["--config", CONFIG, "--input", f"{shapes}/coco/val", "--output", str(tmp_path / "vis"),
                               "MODEL.WEIGHTS", os.path.join(out, "model_final.pth")], tmp_path / "no_datasets"))
    assert len(os.listdir(tmp_path / "vis")) == SMALL["det_images"]["val"]
