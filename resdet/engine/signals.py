"""Stopping training on SIGTERM or SIGINT: finish the iteration, save a checkpoint, exit with a message."""
import logging
import os
import signal
import threading
from contextlib import contextmanager
from typing import Dict, Iterator, List, Optional, Sequence

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def signal_name(signum: int) -> str:
    """"SIGTERM" for signal.SIGTERM, and so on."""
    return signal.Signals(signum).name


class StopRequest:
    """While active (`with StopRequest() as stop:`), the first SIGTERM or SIGINT sets `stop.signum` and the trainer
    finishes its iteration, saves a checkpoint and stops. A second one gets the behaviour the signal had before:
    SIGTERM ends the process at once, SIGINT raises KeyboardInterrupt.

    Handlers can only be installed from the main thread; elsewhere the signals keep their behaviour (logged).
    """

    def __init__(self):
        self.signum: Optional[int] = None
        self._previous: Dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """True once a stop signal has arrived."""
        return self.signum is not None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is not threading.main_thread():
            logger.warning("training outside the main thread: SIGTERM/SIGINT will not stop it cleanly")
            return self
        for signum in STOP_SIGNALS:
            previous = signal.getsignal(signum)
            if previous is signal.SIG_IGN:  # e.g. SIGINT of a background job: it stays ignored
                continue
            self._previous[signum] = signal.SIG_DFL if previous is None else previous
            signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            logger.warning("%s received: finishing the current iteration, then saving a checkpoint "
                           "(send it again to exit at once, without one)", signal_name(signum))
            return
        logger.warning("%s received again: exiting at once, without a checkpoint", signal_name(signum))
        self._restore()
        signal.raise_signal(signum)


class TrainingInterrupted(SystemExit):
    """Training stopped on a signal after saving its checkpoint. Uncaught, it ends the process without a traceback
    and with status 128 + the signal's number, what a shell reports for a process that signal ended."""

    def __init__(self, signum: int, message: str):
        super().__init__(128 + signum)
        self.signum, self.message = signum, message

    def __str__(self) -> str:
        return self.message


@contextmanager
def forwarded_signals(pids: Sequence[int]) -> Iterator[List[int]]:
    """SIGTERM and SIGINT received by this process (a launcher) are passed on, once each, to the processes `pids`.
    Yields the list of the signals passed on so far."""
    received: List[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def forward(signum: int, frame) -> None:
        received.append(signum)
        logger.warning("%s received: passing it on to the %d training processes", signal_name(signum), len(pids))
        for pid in pids:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:  # that process has already ended
                pass

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        yield received
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
