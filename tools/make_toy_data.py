#!/usr/bin/env python
"""Write the synthetic shapes datasets (ImageFolder classes, COCO json, VOC tree) used by the toy configs.

    python tools/make_toy_data.py                 # $RESDET_DATASETS/toy
    python tools/make_toy_data.py --cifar         # $RESDET_DATASETS/toy_cifar10/cifar-10-batches-py
    python tools/make_toy_data.py --imagenet      # $RESDET_DATASETS/imagenet/{train,val}/<wnid>/*.JPEG

--cifar writes instead a 10-class 32x32 shapes set in the CIFAR-10 python-batch layout (50k training images
in five batches, 10k test; --train-per-class / --test-per-class change the sizes), which the CIFAR-10 loader
reads and tools/paper_experiments.py fig6 trains on.

--imagenet writes a 40-class set of textured shapes, 112 px on the shorter side, in the ImageNet folder layout
(26k training and 2.4k validation JPEGs; --train-per-class / --val-per-class change the sizes), which
`imagenet_train` / `imagenet_val` read and tools/paper_experiments.py fig4 and table3 train on. Its --out is the
folder that receives imagenet/ (default: $RESDET_DATASETS).
"""
import os
import sys
import time

from resdet.data.datasets import datasets_root, make_toy_data, toy_cifar, toy_imagenet
from resdet.errors import UsageError
from resdet.utils.cli import ToolArgumentParser, run_tool


def parse_args(argv=None):
    """Command-line arguments; impossible sizes exit 2 with a message."""
    parser = ToolArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None,
                        help="output folder (default: $RESDET_DATASETS/toy; with --cifar, .../toy_cifar10; with "
                             "--imagenet, $RESDET_DATASETS, which receives imagenet/)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, byte-identical files")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--cifar", action="store_true", help="write the CIFAR-10-format set instead")
    kind.add_argument("--imagenet", action="store_true", help="write the ImageNet-format set instead")
    parser.add_argument("--train-per-class", type=int, default=None,
                        help=f"--cifar: training images per class, a multiple of 10 (the validation tenth is "
                             f"balanced; default {toy_cifar.TRAIN_PER_CLASS}); --imagenet: default "
                             f"{toy_imagenet.TRAIN_PER_CLASS}")
    parser.add_argument("--test-per-class", type=int, default=toy_cifar.TEST_PER_CLASS,
                        help="--cifar test images per class")
    parser.add_argument("--val-per-class", type=int, default=toy_imagenet.VAL_PER_CLASS,
                        help="--imagenet validation images per class")
    args = parser.parse_args(argv)
    if args.train_per_class is None:
        args.train_per_class = toy_imagenet.TRAIN_PER_CLASS if args.imagenet else toy_cifar.TRAIN_PER_CLASS
    if args.cifar and (args.train_per_class <= 0 or args.train_per_class % toy_cifar.VAL_FRACTION
                       or args.test_per_class <= 0):
        parser.error(f"--train-per-class must be a positive multiple of {toy_cifar.VAL_FRACTION} and "
                     f"--test-per-class positive; got {args.train_per_class} and {args.test_per_class}")
    if args.imagenet and (args.train_per_class <= 0 or args.val_per_class <= 0):
        parser.error(f"--train-per-class and --val-per-class must be positive; got {args.train_per_class} and "
                     f"{args.val_per_class}")
    return args


def main(argv=None) -> None:
    """Write the datasets to --out."""
    args = parse_args(argv)
    default = "toy_cifar10" if args.cifar else "" if args.imagenet else "toy"
    out = args.out or os.path.join(datasets_root(), default)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--out {out}: cannot create the folder ({err.strerror})") from None
    start = time.perf_counter()
    if args.cifar:
        folder = toy_cifar.make_toy_cifar(out, args.seed, args.train_per_class, args.test_per_class)
        print(f"CIFAR-format shapes written to {folder} in {time.perf_counter() - start:.1f}s "
              f"({10 * args.train_per_class} training, {10 * args.test_per_class} test images)")
        return
    if args.imagenet:
        folder = toy_imagenet.make_toy_imagenet(out, args.seed, args.train_per_class, args.val_per_class)
        classes = len(toy_imagenet.CLASSES)
        print(f"ImageNet-format shapes written to {folder} in {time.perf_counter() - start:.1f}s "
              f"({classes} classes, {classes * args.train_per_class} training, {classes * args.val_per_class} "
              "validation images)")
        return
    make_toy_data(out, args.seed)
    print(f"toy datasets written to {out} in {time.perf_counter() - start:.1f}s "
          "(cls/{train,val}, coco/{annotations,train,val}, voc/VOC2007)")


if __name__ == "__main__":
    sys.exit(run_tool(main))
