"""COCOEvaluator against pycocotools' COCOeval run directly, on a synthetic COCO json written here."""
import contextlib
import io
import json
import math
import tracemalloc

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from resdet.evaluation.coco import METRIC_NAMES, COCOEvaluator, coco_results
from resdet.evaluation.evaluator import gather_on_main
from resdet.evaluation.voc import VOCEvaluator

CATEGORY_IDS = [1, 3]  # non-contiguous on purpose: contiguous label 0 -> 1, 1 -> 3
IMAGE_SIZE = 200


def _synthetic_coco(path, seed=0):
    """Four images with small and medium boxes of two categories and one crowd region; no large box."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, 5):
        images.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "height": IMAGE_SIZE, "width": IMAGE_SIZE})
        for _ in range(3):
            side = float(rng.choice([20, 40, 60]))
            x, y = rng.uniform(0, IMAGE_SIZE - side, size=2).round(1).tolist()
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "iscrowd": 0,
                                "category_id": int(rng.choice(CATEGORY_IDS)), "bbox": [x, y, side, side * 1.2],
                                "area": side * side * 1.2})
    annotations.append({"id": len(annotations) + 1, "image_id": 1, "iscrowd": 1, "category_id": 1,
                        "bbox": [100.0, 100.0, 80.0, 80.0], "area": 6400.0})
    categories = [{"id": 1, "name": "cat"}, {"id": 3, "name": "dog"}]
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return images, annotations


def _noisy_detections(annotations, seed=1):
    """COCO-format results: jittered copies of the gts (some with the wrong class) plus random boxes."""
    rng = np.random.default_rng(seed)
    results = []
    for ann in annotations:
        x, y, w, h = ann["bbox"]
        jitter = rng.normal(0, 0.15 * w, size=4)
        category = ann["category_id"] if rng.uniform() > 0.2 else int(rng.choice(CATEGORY_IDS))
        results.append({"image_id": ann["image_id"], "category_id": category, "score": float(rng.uniform(0.3, 1)),
                        "bbox": [x + jitter[0], y + jitter[1], abs(w + jitter[2]) + 1, abs(h + jitter[3]) + 1]})
    for image_id in range(1, 5):
        for _ in range(3):
            x, y = rng.uniform(0, 150, size=2)
            results.append({"image_id": image_id, "category_id": int(rng.choice(CATEGORY_IDS)),
                            "score": float(rng.uniform(0, 0.8)), "bbox": [x, y, 30.0, 40.0]})
    return results


def _model_outputs(images, results):
    """The detector's view of `results`: per image, xyxy boxes and contiguous labels."""
    inputs, outputs = [], []
    for image in images:
        mine = [r for r in results if r["image_id"] == image["id"]]
        xywh = torch.tensor([r["bbox"] for r in mine], dtype=torch.float32).reshape(-1, 4)
        inputs.append({"image_id": image["id"], "file_name": image["file_name"],
                       "height": image["height"], "width": image["width"]})
        outputs.append({"boxes": torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1),
                        "scores": torch.tensor([r["score"] for r in mine]),
                        "labels": torch.tensor([CATEGORY_IDS.index(r["category_id"]) for r in mine])})
    return inputs, outputs


def _reference_stats(json_file, results):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(json_file)
        coco_eval = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    return coco_eval.stats[:6] * 100


def _evaluate(json_file, output_dir, inputs, outputs):
    evaluator = COCOEvaluator("synthetic", output_dir, distributed=False, json_file=json_file)
    for start in range(0, len(inputs), 2):
        evaluator.process(inputs[start:start + 2], outputs[start:start + 2])
    return evaluator.evaluate()["bbox"]


def test_matches_pycocotools(tmp_path):
    json_file = str(tmp_path / "gt.json")
    images, annotations = _synthetic_coco(json_file)
    results = _noisy_detections(annotations)
    metrics = _evaluate(json_file, str(tmp_path), *_model_outputs(images, results))
    reference = _reference_stats(json_file, results)
    assert 0 < metrics["AP"] < 100
    for name, expected in zip(METRIC_NAMES, reference):
        if expected < 0:  # no ground truth in that area range
            assert math.isnan(metrics[name]), name
        else:
            assert metrics[name] == pytest.approx(expected, abs=0.01), name
    written = json.loads((tmp_path / "eval" / "coco_instances_results.json").read_text())
    assert len(written) == len(results)
    assert {r["category_id"] for r in written} == set(CATEGORY_IDS)
    np.testing.assert_allclose(sorted(r["bbox"][2] for r in written), sorted(r["bbox"][2] for r in results), atol=1e-4)


def test_perfect_detections_and_crowd(tmp_path):
    json_file = str(tmp_path / "gt.json")
    images, annotations = _synthetic_coco(json_file)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in annotations if not a["iscrowd"]]
    # a detection inside the crowd region matches the crowd and is ignored rather than a false positive
    on_crowd = {"image_id": 1, "category_id": 1, "bbox": [110.0, 110.0, 40.0, 40.0], "score": 0.9}
    metrics = _evaluate(json_file, str(tmp_path), *_model_outputs(images, perfect + [on_crowd]))
    assert metrics["AP"] == pytest.approx(100.0)
    assert metrics["AP50"] == pytest.approx(100.0)
    assert math.isnan(metrics["APl"])  # no large ground truth
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["bbox"]["AP"] == pytest.approx(100.0) and saved["bbox"]["APl"] is None


def test_no_detections_is_zero_with_warning(tmp_path, caplog):
    json_file = str(tmp_path / "gt.json")
    images, _ = _synthetic_coco(json_file)
    inputs, outputs = _model_outputs(images, [])
    with caplog.at_level("WARNING"):
        metrics = _evaluate(json_file, str(tmp_path), inputs, outputs)
    assert metrics == {name: 0.0 for name in METRIC_NAMES}
    assert "no detections" in caplog.text


def test_results_json_merges(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text(json.dumps({"top1": 75.0}))
    json_file = str(tmp_path / "gt.json")
    images, annotations = _synthetic_coco(json_file)
    _evaluate(json_file, str(tmp_path), *_model_outputs(images, _noisy_detections(annotations)))
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["top1"] == 75.0 and "AP" in saved["bbox"]


def _voc_dicts(images, annotations):
    """The synthetic set as VOC-style dataset dicts (0-based xyxy, contiguous labels, crowd as difficult)."""
    return [{"image_id": image["id"], "annotations": [
        {"bbox": [a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]],
         "category_id": CATEGORY_IDS.index(a["category_id"]), "difficult": bool(a["iscrowd"])}
        for a in annotations if a["image_id"] == image["id"]]} for image in images]


def _distributed_worker(rank, world_size, rendezvous, json_file, output_dir):
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        images, annotations = _synthetic_coco(json_file + f".rank{rank}")  # same seed: the same data
        inputs, outputs = _model_outputs(images, _noisy_detections(annotations))
        evaluators = [COCOEvaluator("synthetic", output_dir, json_file=json_file),
                      VOCEvaluator("synthetic", output_dir, dataset_dicts=_voc_dicts(images, annotations),
                                   thing_classes=["cat", "dog"])]
        # only the main process receives the gathered predictions; the others keep nobody's but their own
        assert gather_on_main([f"from rank {rank}"]) == (["from rank 0", "from rank 1"] if rank == 0 else [])
        for evaluator in evaluators:
            # each rank sees every other image, as the sharded test loader gives them
            evaluator.process(inputs[rank::world_size], outputs[rank::world_size])
            results = evaluator.evaluate()
            assert bool(results) == (rank == 0), (rank, results)
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path):
    json_file = str(tmp_path / "gt.json")
    images, annotations = _synthetic_coco(json_file)
    inputs, outputs = _model_outputs(images, _noisy_detections(annotations))
    single_dir, multi_dir = tmp_path / "single", tmp_path / "multi"
    coco = COCOEvaluator("synthetic", str(single_dir), distributed=False, json_file=json_file)
    voc = VOCEvaluator("synthetic", str(single_dir), distributed=False,
                       dataset_dicts=_voc_dicts(images, annotations), thing_classes=["cat", "dog"])
    for evaluator in (coco, voc):
        evaluator.process(inputs, outputs)
        evaluator.evaluate()
    mp.spawn(_distributed_worker, args=(2, str(tmp_path / "rendezvous"), json_file, str(multi_dir)), nprocs=2)
    single = json.loads((single_dir / "eval" / "results.json").read_text())
    multi = json.loads((multi_dir / "eval" / "results.json").read_text())
    assert multi == single
    assert set(single) == {"bbox", "voc"}
    detections = json.loads((multi_dir / "eval" / "coco_instances_results.json").read_text())
    assert len(detections) == len(_noisy_detections(annotations))


class _OracleDetector(torch.nn.Module):
    """Returns the boxes it is handed in the inputs; records the mode it was called in."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.calls = []

    def forward(self, batch):
        self.calls.append((self.training, torch.is_inference_mode_enabled()))
        return [item["oracle"] for item in batch]


def test_inference_on_dataset(tmp_path):
    from resdet.evaluation.evaluator import inference_on_dataset

    json_file = str(tmp_path / "gt.json")
    images, annotations = _synthetic_coco(json_file)
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in annotations if not a["iscrowd"]]
    inputs, outputs = _model_outputs(images, perfect)
    loader = [[dict(inp, oracle=out) for inp, out in zip(inputs[i:i + 3], outputs[i:i + 3])] for i in (0, 3)]
    model = _OracleDetector().train()
    evaluator = COCOEvaluator("synthetic", str(tmp_path), distributed=False, json_file=json_file)
    results = inference_on_dataset(model, loader, evaluator)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
    assert model.calls == [(False, True), (False, True)]
    assert model.training  # the mode is restored


def test_catalogued_dataset_uses_its_metadata(tmp_path):
    json_file = str(tmp_path / "gt.json")
    images, annotations = _synthetic_coco(json_file)
    results = _noisy_detections(annotations)
    evaluator = COCOEvaluator(f"coco:{json_file}:{tmp_path}", None, distributed=False)
    inputs, outputs = _model_outputs(images, results)
    evaluator.process(inputs, outputs)
    metrics = evaluator.evaluate()["bbox"]
    assert metrics["AP"] == pytest.approx(_reference_stats(json_file, results)[0], abs=0.01)


def test_predictions_are_held_as_arrays_until_scoring(tmp_path):
    """500 images x 100 detections: the evaluator holds about 48 bytes a detection (x y w h score class in float64),
    where the COCO result dicts made for scoring take over 300; scoring sees the same detections either way."""
    json_file = str(tmp_path / "gt.json")
    _synthetic_coco(json_file)
    generator = torch.Generator().manual_seed(0)
    inputs = [{"image_id": image_id} for image_id in range(1, 501)]
    corners = torch.rand(500, 100, 2, generator=generator) * 50
    outputs = [{"boxes": torch.cat([c, c + 10], dim=1), "scores": torch.rand(100, generator=generator),
                "labels": torch.randint(0, 2, (100,), generator=generator)} for c in corners]
    evaluator = COCOEvaluator("synthetic", distributed=False, json_file=json_file, category_ids=[1, 2])
    tracemalloc.start()
    evaluator.process(inputs, outputs)
    held, _ = tracemalloc.get_traced_memory()
    results = coco_results(evaluator._predictions)
    with_dicts, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert held < 60 * 50_000 and with_dicts - held > 300 * 50_000
    assert len(results) == 50_000
    x1, y1, x2, y2 = outputs[0]["boxes"][0].double().tolist()
    assert results[0] == {"image_id": 1, "category_id": [1, 2][int(outputs[0]["labels"][0])],
                          "score": float(outputs[0]["scores"][0]), "bbox": [x1, y1, x2 - x1, y2 - y1]}
