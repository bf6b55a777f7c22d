#!/usr/bin/env python
"""Write the synthetic shapes datasets (ImageFolder classes, COCO json, VOC tree) used by the toy configs.

    python tools/make_toy_data.py                 # $RESDET_DATASETS/toy
    python tools/make_toy_data.py --cifar         # $RESDET_DATASETS/toy_cifar10/cifar-10-batches-py

--cifar writes instead a 10-class 32x32 shapes set in the CIFAR-10 python-batch layout (50k training images
in five batches, 10k test; --train-per-class / --test-per-class change the sizes), which the CIFAR-10 loader
reads and tools/paper_experiments.py trains on.
"""
import os
import sys
import time

from resdet.data.datasets import datasets_root, make_toy_data, toy_cifar
from resdet.errors import UsageError
from resdet.utils.cli import ToolArgumentParser, run_tool


def main() -> None:
    """Write the datasets to --out."""
    parser = ToolArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None,
                        help="output folder (default: $RESDET_DATASETS/toy; with --cifar, .../toy_cifar10)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, byte-identical files")
    parser.add_argument("--cifar", action="store_true", help="write the CIFAR-10-format set instead")
    parser.add_argument("--train-per-class", type=int, default=toy_cifar.TRAIN_PER_CLASS,
                        help="--cifar training images per class, a multiple of 10 (the validation tenth is balanced)")
    parser.add_argument("--test-per-class", type=int, default=toy_cifar.TEST_PER_CLASS,
                        help="--cifar test images per class")
    args = parser.parse_args()
    if args.cifar and (args.train_per_class <= 0 or args.train_per_class % toy_cifar.VAL_FRACTION
                       or args.test_per_class <= 0):
        parser.error(f"--train-per-class must be a positive multiple of {toy_cifar.VAL_FRACTION} and "
                     f"--test-per-class positive; got {args.train_per_class} and {args.test_per_class}")
    out = args.out or os.path.join(datasets_root(), "toy_cifar10" if args.cifar else "toy")
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
    make_toy_data(out, args.seed)
    print(f"toy datasets written to {out} in {time.perf_counter() - start:.1f}s "
          "(cls/{train,val}, coco/{annotations,train,val}, voc/VOC2007)")


if __name__ == "__main__":
    sys.exit(run_tool(main))
