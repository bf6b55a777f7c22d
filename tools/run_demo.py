#!/usr/bin/env python
"""`make demo`: the main job on the embedded toy data, end to end, through the real command-line tools.

    python tools/run_demo.py                       # into $DEMO_OUTPUT (default output/demo)
    python tools/run_demo.py --compare             # `make demo-compare`: adds the detector trained from scratch
    python tools/run_demo.py SOLVER.MAX_ITER 10    # KEY VALUE overrides for every run after the data

Stages: the toy data (tools/make_toy_data.py, skipped when $RESDET_DATASETS/toy was written with the same seed
and generator), the classifier (tools/train_cls.py), the detector from its checkpoint (tools/train_det.py, COCO
AP on toy_coco_val), its VOC07 mAP on toy_voc_test (the same scenes, train_det.py --eval-only), detections drawn
on validation images (tools/demo.py), and the summary. --compare also trains the detector from scratch on the
same schedule and reuses the pretrained runs of an earlier `make demo` when they are complete and newer than
the data.

Outputs: summary.json {cls_top1, cls_top1_grayscale, cls_top1_hue90, det_AP, det_AP50, det_voc07, seconds,
det_per_class {class: {AP, VOC07 AP50}}, det_best {best_metric, best_value, best_iteration}}
(--compare adds scratch_AP, scratch_AP50, scratch_seconds; `seconds` is always the time of the `make demo`
stages), curves.png, vis/*.png, and one OUTPUT_DIR per run: cls/, det/, voc07/, scratch/.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from textwrap import indent
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import resdet.data.datasets.toy as toy_generator
from resdet.data.datasets import datasets_root
from resdet.evaluation.evaluator import per_class_table
from resdet.utils import cli
from resdet.utils.plots import Panel, loss_names, metric_series, plot_panels, read_json_lines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLS_CONFIG = os.path.join(REPO, "configs", "toy_cls_r18.yaml")
DET_CONFIG = os.path.join(REPO, "configs", "toy_frcnn_r18_fpn.yaml")
SCRATCH_CONFIG = os.path.join(REPO, "configs", "toy_frcnn_r18_fpn_scratch.yaml")
COCO_VAL, VOC_TEST = "toy_coco_val", "toy_voc_test"
VIS_IMAGES = 8
VIS_SCORE_THRESH = 0.5
VIS_MIN_SIDE = 480  # the toy scenes are 128-160 px: drawn 3x larger, names and scores can be read
DATA_STAMP = ".complete.json"  # written after the generator succeeds: {"seed", "generator"}
DEMO_KEYS = ("cls_top1", "cls_top1_grayscale", "cls_top1_hue90", "det_AP", "det_AP50", "det_voc07", "seconds")
SCRATCH_STAGE = "Training the detector from scratch on the same schedule"

Stage = Tuple[str, Callable[[], str]]  # (name, action returning a note for the table)


class StageFailed(Exception):
    """A tool exited with a non-zero status (it has printed its own error)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Paths:
    """Where the demo writes: one folder per run, the pictures, the summary and the curves."""

    out: str
    cls: str
    det: str
    voc07: str
    scratch: str
    vis: str
    summary: str
    curves: str

    @classmethod
    def under(cls, out: str) -> "Paths":
        """The demo's layout under `out`."""
        parts = {name: os.path.join(out, name) for name in ("cls", "det", "voc07", "scratch", "vis")}
        return cls(out=out, summary=os.path.join(out, "summary.json"), curves=os.path.join(out, "curves.png"),
                   **parts)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """--compare, --output, --seed and trailing KEY VALUE overrides."""
    parser = cli.ToolArgumentParser(description=__doc__)
    parser.add_argument("--compare", action="store_true", help="also train the detector from scratch")
    parser.add_argument("--output", default=os.environ.get("DEMO_OUTPUT", "output/demo"), metavar="DIR",
                        help="output folder (default: $DEMO_OUTPUT or output/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the toy data")
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
                        help="config overrides for every run after the data, e.g. SOLVER.MAX_ITER 10")
    args = parser.parse_args(argv)
    if len(args.opts) % 2:
        parser.error(f"overrides come in KEY VALUE pairs; got {len(args.opts)} words: {' '.join(args.opts)}")
    return args


def run_tool(tool: str, *args: str) -> None:
    """Run tools/<tool> with this Python; its output streams to the terminal (progress bars included)."""
    command = [sys.executable, os.path.join(REPO, "tools", tool), *args]
    sys.stdout.flush()
    status = subprocess.run(command).returncode
    if status != 0:
        raise StageFailed(f"tools/{tool} exited with status {status}: {' '.join(command)}", status)


def generator_fingerprint() -> str:
    """SHA-256 of the toy generator's sources (toy*.py), so a changed generator rewrites the data."""
    folder = os.path.dirname(os.path.abspath(toy_generator.__file__))
    digest = hashlib.sha256()
    for name in sorted(f for f in os.listdir(folder) if f.startswith("toy") and f.endswith(".py")):
        with open(os.path.join(folder, name), "rb") as file:
            digest.update(name.encode() + b"\0" + file.read())
    return digest.hexdigest()


def data_stamp_path(toy_dir: str) -> str:
    """The stamp the driver writes into the toy folder once the generator has finished."""
    return os.path.join(toy_dir, DATA_STAMP)


def write_data_stamp(toy_dir: str, seed: int) -> None:
    """Mark `toy_dir` as complete for `seed` and the current generator."""
    with open(data_stamp_path(toy_dir), "w") as file:
        json.dump({"seed": seed, "generator": generator_fingerprint()}, file)


def data_is_current(toy_dir: str, seed: int) -> bool:
    """Whether `toy_dir` was completely written with `seed` by the current generator."""
    try:
        with open(data_stamp_path(toy_dir)) as file:
            stamp = json.load(file)
    except (OSError, ValueError):
        return False
    return stamp == {"seed": seed, "generator": generator_fingerprint()}


def make_data(toy_dir: str, seed: int) -> str:
    """Write the toy datasets unless they are current; a stale folder is removed first (no leftover files)."""
    if data_is_current(toy_dir, seed):
        return f"reused {toy_dir} (seed {seed})"
    if os.path.exists(toy_dir):
        print(f"replacing {toy_dir}: written with another seed or generator, or incompletely", flush=True)
        shutil.rmtree(toy_dir)
    run_tool("make_toy_data.py", "--out", toy_dir, "--seed", str(seed))
    write_data_stamp(toy_dir, seed)
    return f"wrote {toy_dir} (seed {seed})"


def fresh_run(tool: str, config: str, run_dir: str, args: Sequence[str]) -> str:
    """tools/<tool> into an emptied `run_dir` (the tools append to metrics.json, so an old run would mix in)."""
    shutil.rmtree(run_dir, ignore_errors=True)
    run_tool(tool, "--config", config, *args, "OUTPUT_DIR", run_dir)
    return run_dir


def draw(paths: Paths, toy_dir: str, opts: Sequence[str]) -> str:
    """The pretrained detector's detections on the first validation images, as PNG files in vis/."""
    shutil.rmtree(paths.vis, ignore_errors=True)
    run_tool("demo.py", "--config", DET_CONFIG, "--input", os.path.join(toy_dir, "coco", "val"),
             "--output", paths.vis, "--max-images", str(VIS_IMAGES), "--score-thresh", str(VIS_SCORE_THRESH),
             "--image-format", "png", "--min-side", str(VIS_MIN_SIDE),
             *opts, "MODEL.WEIGHTS", os.path.join(paths.det, "model_final.pth"))
    return f"{len(pictures(paths.vis))} pictures, scores >= {VIS_SCORE_THRESH}"


def pictures(folder: str) -> List[str]:
    """The PNG files in `folder`."""
    return sorted(f for f in os.listdir(folder) if f.endswith(".png")) if os.path.isdir(folder) else []


def read_result(path: str, *keys: str) -> float:
    """results.json[keys[0]][keys[1]]...; a missing file or key is an error naming both."""
    try:
        with open(path) as file:
            value = json.load(file)
    except OSError as err:
        raise FileNotFoundError(f"{path}: cannot read the evaluation results ({err.strerror})") from None
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise ValueError(f"{path}: no {'/'.join(keys)}")
        value = value[key]
    return float(value)


def results_path(run_dir: str) -> str:
    """OUTPUT_DIR/eval/results.json, where the tools write the last DATASETS.TEST evaluation."""
    return os.path.join(run_dir, "eval", "results.json")


def pretrained_summary(paths: Paths, seconds: float) -> Dict[str, float]:
    """The `make demo` numbers from the runs' results files."""
    return {
        "cls_top1": read_result(results_path(paths.cls), "top1"),
        # the same validation images without colour and with every hue rotated: the classifier must see shape
        "cls_top1_grayscale": read_result(results_path(paths.cls), "top1_grayscale"),
        "cls_top1_hue90": read_result(results_path(paths.cls), "top1_hue90"),
        "det_AP": read_result(results_path(paths.det), "bbox", "AP"),
        "det_AP50": read_result(results_path(paths.det), "bbox", "AP50"),
        "det_voc07": read_result(results_path(paths.voc07), "voc", "AP50_07"),
        "seconds": round(seconds, 1),
        "det_per_class": per_class_results(paths),
        "det_best": best_checkpoint(paths.det),
    }


def per_class_results(paths: Paths) -> Dict[str, Dict[str, float]]:
    """{class: {"AP": COCO AP on toy_coco_val, "VOC07 AP50": on toy_voc_test}} from the runs' results files."""
    with open(results_path(paths.det)) as file:
        coco = json.load(file)["bbox"]
    with open(results_path(paths.voc07)) as file:
        voc = json.load(file)["voc"]["per_class_07"]
    names = [key[len("AP-"):] for key in coco if key.startswith("AP-")]
    return {name: {"AP": coco[f"AP-{name}"], "VOC07 AP50": voc.get(name)} for name in names}


def best_checkpoint(run_dir: str) -> Dict[str, float]:
    """The metric, value and iteration TEST.BEST_METRIC recorded in run_dir/model_best.pth ({} without one)."""
    import torch

    path = os.path.join(run_dir, "model_best.pth")
    if not os.path.isfile(path):
        return {}
    meta = torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("meta", {})
    return {key: meta[key] for key in ("best_metric", "best_value", "best_iteration") if key in meta}


def reusable_summary(paths: Paths, toy_dir: str, seed: int) -> Optional[Dict[str, float]]:
    """The summary of a complete earlier `make demo` on the current data, or None (then it runs again)."""
    needed = [paths.summary, os.path.join(paths.cls, "model_final.pth"), os.path.join(paths.det, "model_final.pth")]
    if not data_is_current(toy_dir, seed) or not all(os.path.isfile(path) for path in needed):
        return None
    if os.path.getmtime(paths.summary) < os.path.getmtime(data_stamp_path(toy_dir)):
        return None  # the data were rewritten after that run
    with open(paths.summary) as file:
        summary = json.load(file)
    if not all(key in summary for key in DEMO_KEYS):
        return None
    return {key: value for key, value in summary.items() if not key.startswith("scratch_")}


def write_curves(paths: Paths, detectors: Dict[str, str]) -> None:
    """curves.png: the classifier's loss, then the detectors' losses and COCO AP over iterations."""
    classifier = read_json_lines(os.path.join(paths.cls, "metrics.json"))
    rows = {label: read_json_lines(os.path.join(run_dir, "metrics.json")) for label, run_dir in detectors.items()}
    plot_panels([
        Panel("classifier pretraining", "loss", {("classifier", "total_loss"): metric_series(classifier, "total_loss")},
              log_y=True),
        Panel("detector training losses", "loss",
              {(label, name): metric_series(run, name) for label, run in rows.items() for name in loss_names(run)},
              log_y=True),
        Panel(f"detector COCO AP on {COCO_VAL}", "AP (%)",
              {(label, name): metric_series(run, f"eval/bbox/{name}") for label, run in rows.items()
               for name in ("AP", "AP50")}),
    ], paths.curves)


def print_table(timings: List[Tuple[str, float, str]], summary: Dict[str, float], paths: Paths) -> None:
    """Time per stage, the numbers, and where the files are."""
    stages = [(f"[{number}/{len(timings)}] {name}", f"{seconds:6.1f} s  {note}")
              for number, (name, seconds, note) in enumerate(timings, start=1)]
    numbers = [("classifier top-1 on toy_cls_val (%): as is / grayscale / hues +90 deg",
                f"{summary['cls_top1']:.2f} / {summary['cls_top1_grayscale']:.2f} / {summary['cls_top1_hue90']:.2f}"),
               (f"detector COCO AP / AP50 on {COCO_VAL}", f"{summary['det_AP']:.2f} / {summary['det_AP50']:.2f}"),
               (f"detector VOC07 mAP on {VOC_TEST}", f"{summary['det_voc07']:.2f}")]
    if "scratch_AP" in summary:
        numbers.append((f"from scratch: COCO AP / AP50 on {COCO_VAL}",
                        f"{summary['scratch_AP']:.2f} / {summary['scratch_AP50']:.2f}"))
    runs = "cls,det,voc07,scratch" if "scratch_AP" in summary else "cls,det,voc07"
    files = [("the numbers", paths.summary), ("losses and AP over iterations", paths.curves),
             (f"{len(pictures(paths.vis))} validation images with detections", paths.vis),
             ("the runs (config.yaml, log.txt, metrics.json, model_final.pth, eval/)", f"{paths.out}/{{{runs}}}")]
    best = summary.get("det_best") or {}
    if best:
        numbers.append((f"best {best['best_metric']} during training (model_best.pth)",
                        f"{best['best_value']:.2f} at iteration {best['best_iteration']}"))
    width = max(len(name) for name, _ in stages + numbers + files)
    print(f"\nresdet demo finished in {sum(seconds for _, seconds, _ in timings):.0f} s")
    for section in (stages, numbers, files):
        print("\n".join(f"  {name:<{width}}  {value}" for name, value in section) + "\n", flush=True)
    if summary.get("det_per_class"):
        print(f"  per class: COCO AP on {COCO_VAL}, VOC07 AP50 on {VOC_TEST}\n"
              + indent(per_class_table(summary["det_per_class"]), "  ") + "\n", flush=True)


def demo_stages(paths: Paths, toy_dir: str, opts: Sequence[str]) -> List[Stage]:
    """The pretrained pipeline after the data: classifier, detector, VOC07 evaluation, pictures."""
    classifier = os.path.join(paths.cls, "model_final.pth")
    detector = os.path.join(paths.det, "model_final.pth")
    return [
        ("Pretraining the classifier: ResNet-18 on the toy shapes",
         lambda: fresh_run("train_cls.py", CLS_CONFIG, paths.cls, opts)),
        (f"Training the detector: Faster R-CNN R18-FPN on that backbone, COCO AP on {COCO_VAL}",
         lambda: fresh_run("train_det.py", DET_CONFIG, paths.det,
                           [*opts, "MODEL.BACKBONE.WEIGHTS", classifier, "DATASETS.TEST", f"('{COCO_VAL}',)",
                            "TEST.BEST_METRIC", "bbox/AP"])),
        (f"Evaluating the detector: VOC07 mAP on {VOC_TEST}",
         lambda: fresh_run("train_det.py", DET_CONFIG, paths.voc07,
                           ["--eval-only", *opts, "MODEL.WEIGHTS", detector, "DATASETS.TEST", f"('{VOC_TEST}',)"])),
        ("Drawing detections on validation images", lambda: draw(paths, toy_dir, opts)),
    ]


def run(args: argparse.Namespace) -> Dict[str, float]:
    """Every stage in order, announced and timed; returns the summary written to summary.json."""
    start = time.perf_counter()
    paths, toy_dir, opts = Paths.under(args.output), os.path.join(datasets_root(), "toy"), list(args.opts)
    reused = reusable_summary(paths, toy_dir, args.seed) if args.compare else None
    timings: List[Tuple[str, float, str]] = []
    summary: Dict[str, float] = {}

    def train_scratch() -> str:
        """The same detector and schedule without the pretrained backbone."""
        return fresh_run("train_det.py", SCRATCH_CONFIG, paths.scratch, [*opts, "DATASETS.TEST", f"('{COCO_VAL}',)"])

    def summarise() -> str:
        """summary.json and curves.png; `seconds` leaves out the scratch run, which `make demo` does not do."""
        scratch_seconds = next((seconds for name, seconds, _ in timings if name == SCRATCH_STAGE), 0.0)
        summary.update(reused or pretrained_summary(paths, time.perf_counter() - start - scratch_seconds))
        detectors = {"pretrained": paths.det}
        if args.compare:
            summary.update(scratch_AP=read_result(results_path(paths.scratch), "bbox", "AP"),
                           scratch_AP50=read_result(results_path(paths.scratch), "bbox", "AP50"),
                           scratch_seconds=round(scratch_seconds, 1))
            detectors["scratch"] = paths.scratch
        write_curves(paths, detectors)
        with open(paths.summary, "w") as file:
            json.dump(summary, file, indent=1)
        return ""

    stages: List[Stage] = [("Making the toy data", lambda: make_data(toy_dir, args.seed))]
    stages += [(name, (lambda: "reused: the last make demo, on the same data") if reused else action)
               for name, action in demo_stages(paths, toy_dir, opts)]
    if args.compare:
        stages.append((SCRATCH_STAGE, train_scratch))
    stages.append(("Summary", summarise))
    for number, (name, action) in enumerate(stages, start=1):
        print(f"\n[{number}/{len(stages)}] {name}", flush=True)
        stage_start = time.perf_counter()
        note = action()
        timings.append((name, time.perf_counter() - stage_start, note))
    print_table(timings, summary, paths)
    return summary


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: a failed stage or missing result ends with one line on stderr, no traceback."""
    args = parse_args(argv)
    if args.debug:
        os.environ[cli.DEBUG_ENV] = "1"  # the stages are subprocesses: they show their tracebacks too
    try:
        return cli.run_tool(run, args)  # a user error: its message, exit status 2
    except StageFailed as err:
        print(f"run_demo: error: {err}", file=sys.stderr)
        return err.status
    except (OSError, ValueError) as err:
        print(f"run_demo: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("run_demo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
