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
from resdet.checkpoint.checkpointer import Checkpointer
from resdet.config import ConfigError
from resdet.data import DatasetNotFoundError, build_classification_test_loader, build_classification_train_loader
from resdet.engine import (
    ClassificationLoss,
    Trainer,
    comm,
    default_argument_parser,
    default_hooks,
    default_setup,
    launch_tool,
    prepare_model,
    setup_config,
)
from resdet.evaluation import ClassificationEvaluator, classification_inference
from resdet.solver import build_lr_scheduler, build_optimizer
from resdet.utils.events import default_writers

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
        checkpointer = Checkpointer(model, cfg.OUTPUT_DIR)
        if not cfg.MODEL.WEIGHTS:
            if not checkpointer.has_checkpoint():
                raise ConfigError(f"--eval-only: MODEL.WEIGHTS is empty and {cfg.OUTPUT_DIR} has no last_checkpoint")
            checkpointer.load(checkpointer.get_checkpoint_file(), with_checkpointables=False)
        return evaluate(cfg, model, test_loaders)

    optimizer = build_optimizer(cfg, model)
    scheduler = build_lr_scheduler(cfg, optimizer)
    checkpointer = Checkpointer(model, cfg.OUTPUT_DIR, optimizer=optimizer, scheduler=scheduler)
    start_iter = checkpointer.resume_or_load("", resume=args.resume).get("iteration", 0)
    model = prepare_model(model, cfg.SOLVER.CHANNELS_LAST)
    device = next(model.parameters()).device
    trainer = Trainer(model, train_loader, optimizer, ClassificationLoss(device, cfg.SOLVER.CHANNELS_LAST),
                      amp=cfg.SOLVER.AMP.ENABLED)
    writers = default_writers(cfg.OUTPUT_DIR, cfg.SOLVER.MAX_ITER, start_iter) if comm.is_main_process() else None
    eval_fn = (lambda: evaluate(cfg, model, test_loaders)) if test_loaders else None
    trainer.register_hooks(default_hooks(scheduler, checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD,
                                         cfg.TEST.EVAL_PERIOD, eval_fn, writers))
    trainer.train(start_iter, cfg.SOLVER.MAX_ITER)
    return {}


if __name__ == "__main__":
    launch_tool(main, default_argument_parser(__doc__).parse_args(),
                user_errors=(ConfigError, DatasetNotFoundError))
