#!/usr/bin/env python
"""Train and evaluate a classifier (ImageNet, CIFAR-10, the toy classes) with the resdet engine.

    python tools/train_cls.py --config configs/cifar/resnet20.yaml OUTPUT_DIR output/r20
    python tools/train_cls.py --config configs/r50_imagenet.yaml --num-gpus 8
    python tools/train_cls.py --config configs/r50_imagenet.yaml --eval-only MODEL.WEIGHTS model.pth
"""
import logging
import os
from typing import Dict

import resdet
from resdet.config import ConfigError
from resdet.data import DatasetNotFoundError, build_classification_test_loader, build_classification_train_loader
from resdet.engine import ClassificationLoss, default_argument_parser, default_setup, launch_tool, setup_config
from resdet.engine.train_loop import load_for_evaluation, run_training
from resdet.evaluation import ClassificationEvaluator, classification_inference

logger = logging.getLogger("resdet.train_cls")


def evaluate(cfg, model, test_loaders: Dict[str, object]) -> Dict[str, float]:
    """Accuracy on each DATASETS.TEST dataset; the last one's results are returned (and in eval/results.json)."""
    results = {}
    for index, (name, loader) in enumerate(test_loaders.items()):
        # The last dataset writes OUTPUT_DIR/eval/results.json; earlier ones write eval/<name>/.
        last = index == len(test_loaders) - 1
        output_dir = os.path.join(cfg.OUTPUT_DIR, "eval", "" if last else name)
        evaluator = ClassificationEvaluator(output_dir)
        results = classification_inference(model, loader, evaluator, cfg.TEST.CLS_MODE)
        logger.info("%s (%s): top-1 %.2f%%, top-5 %.2f%%", name, cfg.TEST.CLS_MODE, results["top1"], results["top5"])
    return results


def main(args) -> Dict[str, float]:
    """One process of the job: set up, build the data first (a missing dataset fails fast), train, evaluate."""
    cfg = setup_config(args)
    default_setup(cfg, args)
    test_loaders = {name: build_classification_test_loader(cfg, name) for name in cfg.DATASETS.TEST}
    train_loader = None if args.eval_only else build_classification_train_loader(cfg)

    model = resdet.build_model(cfg)  # loads MODEL.WEIGHTS when set
    if args.eval_only:
        load_for_evaluation(cfg, model)
        return evaluate(cfg, model, test_loaders)
    evaluate_model = (lambda m: evaluate(cfg, m, test_loaders)) if test_loaders else None
    loss_fn = ClassificationLoss(next(model.parameters()).device, cfg.SOLVER.CHANNELS_LAST)
    run_training(cfg, args.resume, model, train_loader, loss_fn, evaluate_model)
    return {}


if __name__ == "__main__":
    launch_tool(main, default_argument_parser(__doc__).parse_args(),
                user_errors=(ConfigError, DatasetNotFoundError))
