#!/usr/bin/env python
"""Train and evaluate a Faster R-CNN detector (COCO, PASCAL VOC, the toy shapes, your own data).

    python tools/train_det.py --config configs/coco_frcnn_r101.yaml
    python tools/train_det.py --config configs/coco_frcnn_r50_fpn.yaml --num-gpus 8
    python tools/train_det.py --config configs/voc_frcnn_r101.yaml --eval-only MODEL.WEIGHTS model.pth
"""
import logging
import os
import sys
from typing import Dict

import resdet
from resdet.config import ConfigError
from resdet.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from resdet.data.class_count import check_num_classes
from resdet.engine import comm, default_argument_parser, default_setup, launch_tool, model_losses, setup_config
from resdet.engine.train_loop import load_for_evaluation, run_training
from resdet.evaluation.coco import COCOEvaluator
from resdet.evaluation.coco_backends import coco_eval_backend
from resdet.evaluation.evaluator import DatasetEvaluator, DatasetEvaluators, inference_on_dataset
from resdet.evaluation.proposals import ProposalEvaluator
from resdet.evaluation.voc import VOCEvaluator
from resdet.modeling.detector.tta import with_test_time_augmentation

logger = logging.getLogger("resdet.train_det")
EVALUATORS = {"coco": COCOEvaluator, "voc": VOCEvaluator}


def build_evaluator(cfg, dataset_name: str, output_dir: str) -> DatasetEvaluator:
    """The evaluator the dataset's metadata asks for (COCO AP or the VOC devkit's mAP), with proposal recall when
    TEST.EVAL_PROPOSALS."""
    kind = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if kind not in EVALUATORS:
        raise ConfigError(f"DATASETS.TEST: {dataset_name!r} has evaluator type {kind!r}; expected coco or voc")
    options = {"backend": cfg.TEST.COCO_EVAL_BACKEND} if kind == "coco" else {}
    evaluator = EVALUATORS[kind](dataset_name, output_dir, **options)
    if not cfg.TEST.EVAL_PROPOSALS:
        return evaluator
    proposals = ProposalEvaluator(dataset_name, output_dir, backend=cfg.TEST.COCO_EVAL_BACKEND)
    return DatasetEvaluators([evaluator, proposals])


def evaluate(cfg, model, test_loaders: Dict[str, object]) -> Dict[str, dict]:
    """Detection metrics on each DATASETS.TEST dataset, under TEST.AUG when enabled; the last one writes
    OUTPUT_DIR/eval/."""
    detector = comm.unwrap_model(model)
    detector.return_proposals = cfg.TEST.EVAL_PROPOSALS
    model = with_test_time_augmentation(cfg, detector)
    results = {}
    for index, (name, loader) in enumerate(test_loaders.items()):
        last = index == len(test_loaders) - 1
        output_dir = cfg.OUTPUT_DIR if last else os.path.join(cfg.OUTPUT_DIR, "eval", name)
        results = inference_on_dataset(model, loader, build_evaluator(cfg, name, output_dir))
        if comm.is_main_process():
            logger.info("%s: %s", name, results)
    return results


def flatten_metrics(results: dict, prefix: str = "") -> Dict[str, float]:
    """{"bbox": {"AP": 1.0}} -> {"bbox/AP": 1.0}, numbers only (what the metrics writers take)."""
    flat = {}
    for key, value in results.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, name + "/"))
        elif isinstance(value, (int, float)):
            flat[name] = float(value)
    return flat


def check_datasets(cfg, eval_only: bool, config_file: str) -> None:
    """Fail in seconds, before building the model, when a dataset is missing or has another number of classes."""
    names = (() if eval_only else tuple(cfg.DATASETS.TRAIN)) + tuple(cfg.DATASETS.TEST)
    for name in names:
        DatasetCatalog.get_records(name)  # parsed (or mapped from its cache) now; the loaders reuse it
    check_num_classes(cfg, names, config_file)
    if any(MetadataCatalog.get(name).get("evaluator_type") == "coco" for name in cfg.DATASETS.TEST):
        coco_eval_backend(cfg.TEST.COCO_EVAL_BACKEND)  # an unknown name or a missing package: now, not after training
    without_json = [name for name in cfg.DATASETS.TEST if not MetadataCatalog.get(name).get("json_file")]
    if cfg.TEST.EVAL_PROPOSALS and without_json:
        raise ConfigError(f"{config_file or 'default config'}: TEST.EVAL_PROPOSALS needs COCO json ground truth, and "
                          f"{', '.join(without_json)} has none (a VOC set?): evaluate proposals on a COCO-format set")


def main(args) -> Dict[str, dict]:
    """One process of the job: set up, check the data, train with the shared engine, evaluate."""
    cfg = setup_config(args)
    default_setup(cfg, args)
    check_datasets(cfg, args.eval_only, args.config)
    test_loaders = {name: build_detection_test_loader(cfg, name) for name in cfg.DATASETS.TEST}

    model = resdet.build_model(cfg)  # loads MODEL.BACKBONE.WEIGHTS / MODEL.WEIGHTS when set
    if args.eval_only:
        load_for_evaluation(cfg, model)
        return evaluate(cfg, model, test_loaders)
    evaluate_model = (lambda m: flatten_metrics(evaluate(cfg, m, test_loaders))) if test_loaders else None
    run_training(cfg, args.resume, model, build_detection_train_loader(cfg), model_losses, evaluate_model)
    return {}


if __name__ == "__main__":
    sys.exit(launch_tool(main, default_argument_parser(__doc__).parse_args()))
