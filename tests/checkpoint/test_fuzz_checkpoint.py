"""Fuzzing load_weights: random bytes, truncated or edited checkpoints, torch files and pickles of odd structures
either load (with a report) or raise CheckpointError naming the file; nothing else escapes, no code runs."""
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from fuzzing import FUZZ, edited_bytes, nested
from hypothesis import given
from hypothesis import strategies as st

import resdet
from resdet.checkpoint import load_weights
from resdet.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[2]

SCALARS = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6)
           | st.binary(max_size=6))
SHAPES = st.lists(st.integers(0, 3), max_size=3).map(tuple)
TENSORS = st.builds(lambda shape, dtype: torch.zeros(shape, dtype=dtype), SHAPES,
                    st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool]))
ARRAYS = st.builds(lambda shape, dtype: np.zeros(shape, dtype=dtype), SHAPES,
                   st.sampled_from([np.float32, np.int64, np.uint8]))


@pytest.fixture(scope="module")
def model():
    cfg = resdet.get_cfg()
    cfg.merge_from_file(str(ROOT / "configs" / "cifar" / "resnet20.yaml"))
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "MODEL.CIFAR_RESNET.N", "1", "MODEL.CIFAR_RESNET.WIDTHS", "[4, 8, 16]"])
    return resdet.build_model(cfg)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz_weights")


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def valid_files(model):
    """A training checkpoint (torch zip) and an MSRA-style pickle of numpy blobs."""
    state = model.state_dict()
    checkpoint = _torch_bytes({"model": state, "iteration": 3, "meta": {"class_names": ["a", "b"]}})
    blobs = {"blobs": {"conv1_w": np.zeros((4, 3, 3, 3), np.float32), "fc1000_b": np.zeros(10, np.float32)}}
    return checkpoint, pickle.dumps(blobs, protocol=2)


def load_or_refuse(model, path: Path, content: bytes):
    path.write_bytes(content)
    try:
        report = load_weights(model, str(path))
    except CheckpointError as err:
        assert path.name in str(err)
        return
    assert isinstance(report.loaded, list) and isinstance(report.meta, dict)


@FUZZ
@given(data=st.data(), suffix=st.sampled_from([".pth", ".pkl"]))
def test_edited_checkpoints(model, folder, valid_files, data, suffix):
    source = data.draw(st.sampled_from(valid_files))
    load_or_refuse(model, folder / f"edited{suffix}", data.draw(edited_bytes(source) | st.binary(max_size=64)))


@FUZZ
@given(content=nested(SCALARS | TENSORS), wrap=st.sampled_from(["plain", "model", "state_dict"]))
def test_torch_files_of_odd_structures(model, folder, content, wrap):
    obj = content if wrap == "plain" else {wrap: content}
    load_or_refuse(model, folder / "odd.pth", _torch_bytes(obj))


@FUZZ
@given(content=nested(SCALARS | ARRAYS), wrap=st.sampled_from(["plain", "blobs", "model"]),
       protocol=st.integers(2, 5))
def test_pickles_of_odd_structures(model, folder, content, wrap, protocol):
    obj = content if wrap == "plain" else {wrap: content}
    load_or_refuse(model, folder / "odd.pkl", pickle.dumps(obj, protocol=protocol))


@FUZZ
@given(data=st.data())
def test_state_dicts_with_renamed_reshaped_or_replaced_entries(model, folder, data):
    state = dict(model.state_dict())
    for _ in range(data.draw(st.integers(1, 4))):
        key = data.draw(st.sampled_from(sorted(state)))
        action = data.draw(st.sampled_from(["rename", "reshape", "replace", "delete"]))
        value = state.pop(key)
        if action == "rename":
            state[data.draw(st.text(max_size=30) | st.just("backbone." + key))] = value
        elif action == "reshape":
            state[key] = data.draw(TENSORS)
        elif action == "replace":
            state[key] = data.draw(SCALARS | ARRAYS)
    load_or_refuse(model, folder / "state.pth", _torch_bytes({"model": state}))
