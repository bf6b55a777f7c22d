"""DATALOADER.SHARED_RECORDS: training and evaluation give the same results from the record store (read by two
spawn-started loader workers) as from plain lists of dicts read in the main process: same weights bit for bit after
10 iterations, same AP. Run twice, the second start maps the cache file that the first one wrote. The store's
workers are started by spawn, so tools/train_det.py is also re-imported by spawned workers here."""
import json
import os
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OVERRIDES = ["SOLVER.IMS_PER_BATCH", "2", "INPUT.MIN_SIZE_TRAIN", "(80, 96)", "INPUT.MAX_SIZE_TRAIN", "128",
             "INPUT.MIN_SIZE_TEST", "64", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "128",
             "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "64", "SOLVER.MAX_ITER", "10", "SOLVER.CHECKPOINT_PERIOD", "1000",
             "SEED", "0", "DATASETS.TEST", "('toy_coco_val',)", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]


def train(output_dir, shared: bool, workers: int, datasets_root, cache_dir) -> str:
    env = dict(os.environ, RESDET_DATASETS=str(datasets_root), RESDET_CACHE=str(cache_dir), OMP_NUM_THREADS="1")
    args = [sys.executable, "tools/train_det.py", "--config", "configs/toy_frcnn_r18_fpn.yaml", *OVERRIDES,
            "DATALOADER.SHARED_RECORDS", str(shared), "DATALOADER.NUM_WORKERS", str(workers),
            # workers started by spawn, as on macOS: the store reaches them as its file's path and is mapped there
            "DATALOADER.START_METHOD", "spawn" if workers else "",
            "OUTPUT_DIR", str(output_dir)]
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    return (output_dir / "log.txt").read_text()


def test_store_and_lists_train_and_evaluate_alike(toy_datasets, tmp_path):
    cache = tmp_path / "cache"
    train(tmp_path / "lists", False, 0, toy_datasets, cache)
    written = sorted(os.listdir(cache))
    assert any(name.startswith("instances_train.json-") and name.endswith(".store") for name in written)
    log = train(tmp_path / "store", True, 2, toy_datasets, cache)
    assert "dataset records mapped from" in log and sorted(os.listdir(cache)) == written  # nothing rebuilt

    lists = torch.load(tmp_path / "lists" / "model_final.pth", weights_only=True)["model"]
    store = torch.load(tmp_path / "store" / "model_final.pth", weights_only=True)["model"]
    assert lists.keys() == store.keys()
    assert all(torch.equal(lists[name], store[name]) for name in lists)
    ap = [json.load(open(tmp_path / run / "eval" / "results.json")) for run in ("lists", "store")]
    assert ap[0] == ap[1] and ap[0]["bbox"]["AP50"] >= 0
