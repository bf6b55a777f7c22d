"""A restricted unpickler for Caffe2/Detectron `.pkl` weight files: numpy arrays and plain containers only.

A pickle can name any importable callable and have the loader call it; this unpickler resolves only the
few globals numpy needs to rebuild arrays, so a file that would run code is refused before anything runs.
"""
import importlib
import pickle
from typing import Any

from ..errors import CheckpointError

# (module, name) pairs a weight pickle legitimately needs. numpy 1.x pickles say `numpy.core`, numpy 2.x
# says `numpy._core`; both resolve to the installed numpy's module below.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),  # protocol-2 pickles store array bytes as latin-1 text re-encoded by this
    ("collections", "OrderedDict"),
}


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
    """The file asks for a global outside the allow-list (it could run code), or is not a pickle."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the allow-listed globals; anything else raises UnsafePickleError."""

    def __init__(self, file, path: str):
        # latin1 reads Python 2 pickles (the Detectron/MSRA files), whose array bytes are str
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self.path}: refusing to load the pickle global {module}.{name}; weight files may hold "
                "only numpy arrays and plain containers (a pickle naming other globals can run code)"
            )
        if module.startswith("numpy.core."):
            module = _installed_numpy_core() + module[len("numpy.core"):]
        return getattr(importlib.import_module(module), name)


def _installed_numpy_core() -> str:
    import numpy

    return "numpy._core" if hasattr(numpy, "_core") else "numpy.core"


def load_pickle(path: str) -> Any:
    """Unpickle `path` rebuilding only numpy arrays, dtypes and plain containers."""
    with open(path, "rb") as file:
        try:
            return _RestrictedUnpickler(file, path).load()
        except UnsafePickleError:
            raise
        except Exception as err:  # noqa: BLE001 - hostile bytes fail anywhere (numpy's rebuild, codecs, frames)
            raise UnsafePickleError(f"{path}: not a readable weight pickle: {err}") from None
