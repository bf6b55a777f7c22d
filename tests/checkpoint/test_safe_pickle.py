"""The restricted unpickler rebuilds numpy arrays and refuses any pickle that would run code."""
import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

import resdet
from resdet.checkpoint import UnsafePickleError, load_pickle


class RunsShellCommand:
    """Unpickling this calls os.system: what a malicious weight file does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_and_containers_round_trip(tmp_path, protocol):
    blobs = OrderedDict(conv1_w=np.random.rand(4, 3, 7, 7).astype(np.float32), steps=np.arange(5),
                        lr=np.float64(0.1), nested={"names": ["a", "b"], "shape": (1, 2)})
    path = tmp_path / "blobs.pkl"
    path.write_bytes(pickle.dumps({"blobs": blobs}, protocol=protocol))
    loaded = load_pickle(str(path))["blobs"]
    assert np.array_equal(loaded["conv1_w"], blobs["conv1_w"]) and loaded["conv1_w"].dtype == np.float32
    assert np.array_equal(loaded["steps"], blobs["steps"]) and loaded["lr"] == 0.1
    assert loaded["nested"] == blobs["nested"]


def test_numpy_1_module_names_resolve(tmp_path):
    # files written under numpy 1.x (all MSRA/Detectron ones) name numpy.core, which numpy 2 renamed
    data = pickle.dumps({"w": np.arange(6.0).reshape(2, 3)}, protocol=2)
    old_names = data.replace(b"numpy._core.", b"numpy.core.") if b"numpy._core." in data else data
    path = tmp_path / "old.pkl"
    path.write_bytes(old_names)
    assert b"numpy.core.multiarray" in old_names
    assert np.array_equal(load_pickle(str(path))["w"], np.arange(6.0).reshape(2, 3))


def test_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"conv1_w": RunsShellCommand(marker)}, protocol=2))
    with pytest.raises(UnsafePickleError, match="R-50.pkl") as err:
        resdet.load_weights(torch.nn.Linear(1, 1), str(path))
    assert "system" in str(err.value) and not marker.exists()


def test_torch_file_that_runs_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pth"
    torch.save({"model": RunsShellCommand(marker)}, path)
    with pytest.raises(UnsafePickleError, match="model.pth"):
        resdet.load_weights(torch.nn.Linear(1, 1), str(path))
    assert not marker.exists()


def test_not_a_pickle_names_the_file(tmp_path):
    path = tmp_path / "garbage.pkl"
    path.write_bytes(b"\x00not a pickle")
    with pytest.raises(UnsafePickleError, match="garbage.pkl"):
        load_pickle(str(path))
