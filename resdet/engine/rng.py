"""The random generators of a training process (Python, NumPy, torch CPU and CUDA), saved in checkpoints so
that a resumed run draws exactly what the uninterrupted one would have."""
import logging
import random
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import torch

from . import comm

logger = logging.getLogger(__name__)


def capture_rng_state() -> Dict[str, Any]:
    """This process's generator states as tensors and plain values (what torch.load(weights_only=True) reads)."""
    _, python_state, python_gauss = random.getstate()
    _, numpy_keys, numpy_pos, numpy_has_gauss, numpy_gauss = np.random.get_state()
    state = {
        "python": torch.tensor(python_state, dtype=torch.int64),  # (625,) 624 words and the position
        "python_gauss": python_gauss,
        "numpy": torch.from_numpy(numpy_keys.astype(np.int64)),  # (624,) uint32 words
        "numpy_rest": [int(numpy_pos), int(numpy_has_gauss), float(numpy_gauss)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Set the generators to a capture_rng_state() result."""
    random.setstate((3, tuple(state["python"].tolist()), state["python_gauss"]))
    pos, has_gauss, gauss = state["numpy_rest"]
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


@contextmanager
def preserved_rng_state() -> Iterator[None]:
    """Whatever runs inside (an evaluation) leaves the generators as it found them."""
    state = capture_rng_state()
    try:
        yield
    finally:
        restore_rng_state(state)


class RNGStates:
    """Every rank's generators as a checkpointable. state_dict gathers them (a collective: call it on every
    rank); load_state_dict keeps this rank's and restore() applies it, just before the first iteration, so that
    nothing set up in between can draw from the restored streams."""

    def __init__(self):
        self._loaded: Optional[Dict[str, Any]] = None

    def state_dict(self) -> Dict[str, List[Dict[str, Any]]]:
        return {"per_rank": comm.all_gather(capture_rng_state())}

    def load_state_dict(self, state: Dict[str, List[Dict[str, Any]]]) -> None:
        states, world_size = state["per_rank"], comm.get_world_size()
        if len(states) != world_size:
            logger.warning("the checkpoint holds the random state of %d processes and this job has %d: the random "
                           "streams continue from SEED instead, so this run is not an exact continuation",
                           len(states), world_size)
            return
        self._loaded = states[comm.get_rank()]

    def restore(self) -> None:
        """Set this process's generators to the loaded state, if a checkpoint held one."""
        if self._loaded is not None:
            restore_rng_state(self._loaded)
            self._loaded = None
