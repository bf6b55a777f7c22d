#!/usr/bin/env python
"""Write the synthetic shapes datasets (ImageFolder classes, COCO json, VOC tree) used by the toy configs."""
import argparse
import os
import time

from resdet.data.datasets import datasets_root, make_toy_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None, help="output folder (default: $RESDET_DATASETS/toy)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, byte-identical files")
    args = parser.parse_args()
    out = args.out or os.path.join(datasets_root(), "toy")
    start = time.perf_counter()
    make_toy_data(out, args.seed)
    print(f"toy datasets written to {out} in {time.perf_counter() - start:.1f}s "
          "(cls/{train,val}, coco/{annotations,train,val}, voc/VOC2007)")


if __name__ == "__main__":
    main()
