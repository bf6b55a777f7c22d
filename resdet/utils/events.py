"""Training metrics: an in-memory store filled each iteration and the writers that empty it periodically."""
import json
import logging
import os
import statistics
import sys
from collections import defaultdict, deque
from typing import Dict, Optional

logger = logging.getLogger(__name__)

_HISTORY_LENGTH = 500


class EventStorage:
    """Scalars per iteration; each name keeps its recent history for windowed medians."""

    def __init__(self, start_iter: int = 0):
        self.iter = start_iter
        self._history = defaultdict(lambda: deque(maxlen=_HISTORY_LENGTH))  # name -> deque of (iteration, value)
        self._smoothing: Dict[str, bool] = {}
        self._last_put: Dict[str, int] = {}  # name -> sequence number of its latest value
        self._sequence = 0

    def put_scalar(self, name: str, value: float, smoothing: bool = True) -> None:
        """Record `value` for the current iteration; smoothed names are reported as a windowed median."""
        self._history[name].append((self.iter, float(value)))
        self._smoothing[name] = smoothing
        self._sequence += 1
        self._last_put[name] = self._sequence

    def put_scalars(self, smoothing: bool = True, **values: float) -> None:
        """put_scalar for each keyword."""
        for name, value in values.items():
            self.put_scalar(name, value, smoothing)

    def history(self, name: str) -> list:
        """The recent (iteration, value) pairs of `name`."""
        return list(self._history[name])

    @property
    def sequence(self) -> int:
        """How many values were put so far; `values_since` takes it as a bookmark."""
        return self._sequence

    def values_since(self, sequence: int, window: int) -> Dict[str, float]:
        """Names put after bookmark `sequence`: median of the last `window` values if smoothed, else latest."""
        result = {}
        for name, last_put in self._last_put.items():
            if last_put <= sequence:
                continue
            entries = list(self._history[name])
            if self._smoothing[name]:
                result[name] = statistics.median(value for _, value in entries[-window:])
            else:
                result[name] = entries[-1][1]
        return result


class _PeriodicWriter:
    """Writes the values put since its previous write."""

    def __init__(self, window: int):
        self.window = window
        self._bookmark = 0

    def _new_values(self, storage: EventStorage) -> Dict[str, float]:
        values = storage.values_since(self._bookmark, self.window)
        self._bookmark = storage.sequence
        return values

    def write(self, storage: EventStorage) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class JSONWriter(_PeriodicWriter):
    """metrics.json: one JSON object per line, `{"iteration": i, name: value, ...}`."""

    def __init__(self, path: str, window: int = 20):
        super().__init__(window)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._file = open(path, "a")

    def write(self, storage: EventStorage) -> None:
        values = self._new_values(storage)
        if values:
            self._file.write(json.dumps({"iteration": storage.iter, **values}, sort_keys=True) + "\n")
            self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorboardWriter(_PeriodicWriter):
    """TensorBoard event files in `log_dir`."""

    def __init__(self, log_dir: str, window: int = 20):
        super().__init__(window)
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir)

    def write(self, storage: EventStorage) -> None:
        for name, value in self._new_values(storage).items():
            self._writer.add_scalar(name, value, storage.iter)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class ConsoleWriter(_PeriodicWriter):
    """A tqdm progress bar with ETA on stderr, and one log line per write (console and log.txt)."""

    def __init__(self, max_iter: int, start_iter: int = 0, window: int = 20, stream: Optional[object] = None):
        super().__init__(window)
        from tqdm import tqdm

        self._bar = tqdm(total=max_iter, initial=start_iter, file=stream or sys.stderr, unit="it",
                         dynamic_ncols=True, leave=False)

    def write(self, storage: EventStorage) -> None:
        values = self._new_values(storage)
        self._bar.update(storage.iter + 1 - self._bar.n)
        if not values:
            return
        shown = {name: value for name, value in values.items() if "loss" in name or name == "lr"}
        self._bar.set_postfix({name: f"{value:.4g}" for name, value in shown.items()}, refresh=True)
        text = "  ".join(f"{name}: {value:.4g}" for name, value in sorted(values.items()))
        logger.info("iter %d  %s", storage.iter + 1, text)

    def close(self) -> None:
        self._bar.close()


def default_writers(output_dir: str, max_iter: int, start_iter: int = 0) -> list:
    """metrics.json, TensorBoard events and the progress bar, all in/for `output_dir`."""
    os.makedirs(output_dir, exist_ok=True)
    return [
        ConsoleWriter(max_iter, start_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardWriter(output_dir),
    ]
