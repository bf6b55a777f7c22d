"""What a dataset loader dropped or clipped, by reason and named item; one warning per dataset shows a few."""
import logging
import reprlib
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError

logger = logging.getLogger(__name__)

DROPPED_ANNOTATIONS = "annotations dropped"
CLIPPED_ANNOTATIONS = "annotations clipped to the image"
DROPPED_IMAGES = "images dropped"
MAX_EXAMPLES = 3
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 60, 60
# Boxes past the border by at most this many pixels are clipped without a report: annotation tools round.
CLIP_TOLERANCE = 1.0


class DataIssues:
    """Problems found in one annotation source (a json file, a VOC folder): the items left out, per reason."""

    def __init__(self, source: str, strict: bool = False):
        self.source = source
        self.strict = strict  # raise DataError on the first problem that drops something, instead of counting it
        self._items: Dict[Tuple[str, str], List[str]] = {}  # (kind, reason) -> the items, named

    def add(self, kind: str, reason: str, items: Sequence[str]) -> None:
        """Record the items (annotations or images, named) of `kind` (DROPPED_IMAGES, ...) left out for `reason`."""
        if not items:
            return
        if self.strict and kind != CLIPPED_ANNOTATIONS:
            raise DataError(f"{self.source}: {items[0]}: {reason}")
        self._items.setdefault((kind, reason), []).extend(items)

    def counts(self) -> Dict[Tuple[str, str], int]:
        """(kind, reason) -> how many items."""
        return {key: len(items) for key, items in self._items.items()}

    def total(self, kind: str) -> int:
        """How many items of `kind` (DROPPED_ANNOTATIONS, CLIPPED_ANNOTATIONS, DROPPED_IMAGES) were recorded."""
        return sum(len(items) for (k, _), items in self._items.items() if k == kind)

    def __bool__(self) -> bool:
        return bool(self._items)

    def items(self, kind: str, reason: str) -> List[str]:
        """Every item recorded for (kind, reason), named."""
        return list(self._items.get((kind, reason), []))

    def lines(self) -> List[str]:
        """One line per reason: count, kind, reason and the first MAX_EXAMPLES items."""
        return [f"{kind} ({len(items)}), {reason}: {'; '.join(items[:MAX_EXAMPLES])}"
                + ("; ..." if len(items) > MAX_EXAMPLES else "")
                for (kind, reason), items in self._items.items()]

    def to_json(self) -> List[list]:
        """[[kind, reason, items], ...]: plain values, for saving with a dataset's records."""
        return [[kind, reason, items] for (kind, reason), items in self._items.items()]

    @classmethod
    def from_json(cls, source: str, saved: List[list]) -> "DataIssues":
        """The issues `to_json` saved."""
        issues = cls(source)
        for kind, reason, items in saved:
            issues.add(kind, reason, items)
        return issues

    def message(self, name: str) -> str:
        """The warning text for dataset `name`."""
        return "\n  ".join([f"dataset {name!r}: problems in {self.source}:"] + self.lines())


def short_repr(value: object) -> str:
    """A bounded repr of a (possibly huge or deeply nested) parsed value, for messages."""
    return _SHORT.repr(value)


def check_boxes(boxes: np.ndarray, heights: np.ndarray, widths: np.ndarray, describe: Callable[[int], str],
                issues: DataIssues) -> Tuple[np.ndarray, np.ndarray]:
    """Validate (K,4) x1y1x2y2 boxes in images of the given (K,) sizes: returns (keep (K,) bool, clipped boxes).

    Non-finite, empty and wholly outside boxes are dropped, boxes crossing the border clipped; each group
    is recorded in `issues`, its members named by `describe(k)`.
    """
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(boxes).all(axis=1)
        empty = finite & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
        limits = np.stack([widths, heights, widths, heights], axis=1)
        clipped = np.clip(boxes, 0.0, limits)
        outside = finite & ~empty & ((clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1]))
        keep = finite & ~empty & ~outside
        moved = keep & (np.abs(clipped - boxes).max(axis=1) > CLIP_TOLERANCE)
    for kind, reason, mask in ((DROPPED_ANNOTATIONS, "bbox not finite", ~finite),
                               (DROPPED_ANNOTATIONS, "zero or negative width or height", empty),
                               (DROPPED_ANNOTATIONS, "bbox wholly outside the image", outside),
                               (CLIPPED_ANNOTATIONS, "bbox crosses the image border", moved)):
        indices = np.flatnonzero(mask)
        issues.add(kind, reason, [describe(int(k)) for k in indices])
    return keep, clipped


_ISSUES: Dict[str, DataIssues] = {}


def report_issues(name: str, issues: DataIssues) -> None:
    """Keep `issues` as the latest of dataset `name` and log them in one warning, if there are any."""
    _ISSUES[name] = issues
    if issues:
        logger.warning("%s", issues.message(name))


def dataset_issues(name: str) -> Optional[DataIssues]:
    """The issues found the last time dataset `name` was loaded (None before it was loaded)."""
    return _ISSUES.get(name)
