#!/usr/bin/env python
"""Check every dataset a config names (DATASETS.TRAIN and DATASETS.TEST) before training on it.

    python tools/check_dataset.py --config configs/coco_frcnn_r50_fpn.yaml
    python tools/check_dataset.py --config configs/voc_frcnn_r101.yaml --no-images DATASETS.TEST "()"

Loads each dataset as training does and decodes every image (--no-images skips that), then prints per
dataset its images, annotations and per-class counts, every annotation or image the loader dropped or
clipped (by reason) and every unreadable image. Exit status 0 when the data is usable, 2 with the reasons
when it is not.
"""
import argparse
import logging
import os
import sys

from resdet.config import setup_cfg
from resdet.data.check import check_config_datasets
from resdet.data.errors import DataError
from resdet.utils.cli import ToolArgumentParser, run_tool


def main(argv=None) -> int:
    """Check the config's datasets; print the reports; DataError listing the problems when there are any."""
    parser = ToolArgumentParser(description=__doc__)
    parser.add_argument("--config", "--config-file", dest="config", default="", metavar="FILE", help="config YAML")
    parser.add_argument("--no-images", action="store_true", help="check the annotations only, decode no image")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="threads decoding images")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides, e.g. DATASETS.TRAIN \"('coco:ann.json:images',)\"")
    args = parser.parse_args(argv)
    cfg = setup_cfg(args.config, args.opts)
    # The report below lists every dropped or clipped annotation; the loaders' summary warnings would repeat it.
    logging.getLogger("resdet.data.datasets.issues").setLevel(logging.ERROR)
    reports, problems = check_config_datasets(cfg, args.config, not args.no_images, args.workers)
    for report in reports:
        print("\n".join(report.lines()))
    if problems:
        raise DataError("the data is not usable:\n" + "\n".join(problems))
    print(f"{len(reports)} datasets checked: usable")
    return 0


if __name__ == "__main__":
    sys.exit(run_tool(main))
