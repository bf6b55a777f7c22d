#!/usr/bin/env python
"""Train and evaluate a classifier (ImageNet, CIFAR-10, the toy classes) with the resdet engine.

    python tools/train_cls.py --config configs/cifar/resnet20.yaml OUTPUT_DIR output/r20
    python tools/train_cls.py --config configs/r50_imagenet.yaml --num-gpus 8
    python tools/train_cls.py --config configs/r50_imagenet.yaml --eval-only MODEL.WEIGHTS model.pth
"""
import logging
import os
import sys
from typing import Dict, Tuple

import resdet
from resdet.data import build_classification_test_loader, build_classification_train_loader
from resdet.data.class_count import check_num_classes
from resdet.engine import ClassificationLoss, comm, default_argument_parser, default_setup, launch_tool, setup_config
from resdet.engine.train_loop import load_for_evaluation, run_training
from resdet.evaluation import ClassificationEvaluator, classification_inference
from resdet.evaluation.evaluator import write_json

logger = logging.getLogger("resdet.train_cls")


def build_test_loaders(cfg) -> Dict[Tuple[str, str], object]:
    """A loader per (DATASETS.TEST name, colour test): "" first (the images as they are), then each of
    TEST.CLS_COLOUR_TESTS."""
    return {(name, test): build_classification_test_loader(cfg, name, test)
            for name in cfg.DATASETS.TEST for test in ("", *cfg.TEST.CLS_COLOUR_TESTS)}


def evaluate(cfg, model, test_loaders: Dict[Tuple[str, str], object]) -> Dict[str, float]:
    """Accuracy on each DATASETS.TEST dataset, as is and with each colour test (keys top1_<test>, ...); the last
    dataset's results are returned and written to OUTPUT_DIR/eval/results.json (earlier ones to eval/<name>/)."""
    results: Dict[str, float] = {}
    names = list(dict.fromkeys(name for name, _ in test_loaders))
    for (name, test), loader in test_loaders.items():
        if not test:
            results = {}
        scores = classification_inference(model, loader, ClassificationEvaluator(), cfg.TEST.CLS_MODE)
        results.update({f"{key}_{test}" if test else key: value for key, value in scores.items()})
        logger.info("%s (%s%s): top-1 %.2f%%, top-5 %.2f%%", name, cfg.TEST.CLS_MODE, f", {test}" if test else "",
                    scores["top1"], scores["top5"])
        if comm.is_main_process():
            output_dir = os.path.join(cfg.OUTPUT_DIR, "eval", "" if name == names[-1] else name)
            write_json(os.path.join(output_dir, "results.json"), results)
    return results


def main(args) -> Dict[str, float]:
    """One process of the job: set up, build the data first (a missing dataset fails fast), train, evaluate."""
    cfg = setup_config(args)
    default_setup(cfg, args)
    test_loaders = build_test_loaders(cfg)
    train_loader = None if args.eval_only else build_classification_train_loader(cfg)
    check_num_classes(cfg, (() if args.eval_only else tuple(cfg.DATASETS.TRAIN)) + tuple(cfg.DATASETS.TEST),
                      args.config)

    model = resdet.build_model(cfg)  # loads MODEL.WEIGHTS when set
    if args.eval_only:
        load_for_evaluation(cfg, model)
        return evaluate(cfg, model, test_loaders)
    evaluate_model = (lambda m: evaluate(cfg, m, test_loaders)) if test_loaders else None
    loss_fn = ClassificationLoss(next(model.parameters()).device, cfg.SOLVER.CHANNELS_LAST)
    run_training(cfg, args.resume, model, train_loader, loss_fn, evaluate_model)
    return {}


if __name__ == "__main__":
    sys.exit(launch_tool(main, default_argument_parser(__doc__).parse_args()))
