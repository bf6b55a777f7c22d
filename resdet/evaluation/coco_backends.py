"""The COCO API implementations box AP can run on: pycocotools, or faster-coco-eval's drop-ins (TEST.COCO_EVAL_BACKEND).

Both take the same ground truth and detections and give the same COCOeval results (tests/evaluation/
test_coco_backends.py); faster-coco-eval matches and accumulates in C++: 8 times faster on 5000 images x 100
detections (tools/benchmark.py --task eval --coco-images 5000).
"""
import contextlib
import importlib
import io
from dataclasses import dataclass
from typing import Any, List, Sequence, Tuple, Union

from ..errors import ConfigError

CONFIG_KEY = "TEST.COCO_EVAL_BACKEND"
COCO_EVAL_BACKENDS = ("pycocotools", "faster_coco_eval")
FASTER_COCO_EVAL_REQUIREMENT = "faster-coco-eval>=1.6.8"  # as in setup.py


@dataclass(frozen=True)
class CocoBackend:
    """One COCO API: `coco` loads ground truth (a json path or a dict), `cocoeval` is its COCOeval class."""

    name: str
    coco: type
    cocoeval: type

    def load_ground_truth(self, annotations: Union[str, dict]) -> Any:
        """The COCO object of a json file or an in-memory dataset dict, its progress messages dropped."""
        if self.name == "faster_coco_eval":
            return self.coco(annotations)  # a path or a dict; it reports at debug level
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
            if isinstance(annotations, str):
                return self.coco(annotations)
            coco = self.coco()  # pycocotools reads only files: index the dict as it would the file's contents
            coco.dataset = annotations
            coco.createIndex()
            return coco

    def evaluate_boxes(self, coco_gt: Any, detections: List[dict], image_ids: Sequence) -> Tuple[Any, List[str]]:
        """COCOeval "bbox" of COCO-format `detections` on `image_ids` (evaluate, accumulate, summarize): the
        evaluator (its .stats, .eval["precision"]) and the summary lines it printed. `detections` gain the
        "area"/"id" fields that loadRes adds, as with pycocotools."""
        lines: List[str] = []
        if self.name == "pycocotools":
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                coco_eval = _run_cocoeval(self.cocoeval(coco_gt, coco_gt.loadRes(detections), "bbox"), image_ids)
            lines = printed.getvalue().splitlines()
        else:
            def collect(*parts: Any) -> None:  # faster-coco-eval reports through a print function, not stdout
                lines.append(" ".join(map(str, parts)))

            coco_dt = coco_gt.loadRes(detections)
            coco_eval = _run_cocoeval(self.cocoeval(coco_gt, coco_dt, "bbox", print_function=collect), image_ids)
        return coco_eval, [line for line in lines if line.lstrip().startswith("Average")]

    def evaluate_recall(self, coco_gt: Any, detections: List[dict], image_ids: Sequence,
                        max_dets: Sequence[int]) -> Any:
        """COCOeval "bbox" of class-less `detections` (useCats=0: every box may match every ground-truth box) on
        `image_ids`, evaluated and accumulated at each of `max_dets`: the evaluator, whose .eval["recall"] is
        (IoU thresholds, 1, area ranges, len(max_dets)), -1 where no ground truth qualifies."""
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            kwargs = {"print_function": lambda *parts: None} if self.name == "faster_coco_eval" else {}
            coco_eval = self.cocoeval(coco_gt, coco_gt.loadRes(detections), "bbox", **kwargs)
            coco_eval.params.imgIds = list(image_ids)
            coco_eval.params.useCats = 0
            coco_eval.params.maxDets = list(max_dets)
            coco_eval.evaluate()
            coco_eval.accumulate()
        return coco_eval


def _run_cocoeval(coco_eval: Any, image_ids: Sequence) -> Any:
    coco_eval.params.imgIds = list(image_ids)
    coco_eval.evaluate()
    coco_eval.accumulate()
    coco_eval.summarize()
    return coco_eval


def coco_eval_backend(name: str, key: str = CONFIG_KEY) -> CocoBackend:
    """The backend called `name`; a ConfigError naming `key` for an unknown name or a package not installed."""
    if name not in COCO_EVAL_BACKENDS:
        raise ConfigError(f"{key} is {name!r}; it must be one of {', '.join(map(repr, COCO_EVAL_BACKENDS))}")
    if name == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return CocoBackend(name, COCO, COCOeval)
    try:
        faster = importlib.import_module("faster_coco_eval")
    except ImportError as err:
        raise ConfigError(f"{key} is {name!r} but the faster-coco-eval package is not installed ({err}); "
                          f"pip install '{FASTER_COCO_EVAL_REQUIREMENT}' (resdet's [fast-eval] extra), or set "
                          f"{key} pycocotools") from err
    return CocoBackend(name, faster.COCO, faster.COCOeval_faster)


def installed_coco_eval_backends() -> List[str]:
    """The names of the backends whose package imports here, pycocotools first."""
    names = []
    for name in COCO_EVAL_BACKENDS:
        try:
            coco_eval_backend(name)
        except ConfigError:
            continue
        names.append(name)
    return names

