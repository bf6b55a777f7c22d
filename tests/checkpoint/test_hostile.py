"""Hostile weight files: a pickle whose loading would create a marker file is refused on every load path
(load_weights, MODEL.WEIGHTS, MODEL.BACKBONE.WEIGHTS, the checkpointer's resume, tools/convert_weights.py,
tools/train_det.py), as .pkl and .pth, plain pickle and torch zip alike, with an error naming the file; the marker
never appears."""
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import resdet
from resdet.checkpoint import UnsafePickleError, load_weights
from resdet.checkpoint.checkpointer import Checkpointer
from resdet.errors import CheckpointError, UserError

ROOT = Path(__file__).resolve().parents[2]
TINY_CLASSIFIER = ["MODEL.DEVICE", "cpu", "MODEL.CIFAR_RESNET.N", "1"]


class CreatesMarker:
    """Unpickling this calls open(marker, "w"): the file appears if and only if the loader ran the pickle's code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def write_hostile(path: Path, marker: Path, container: str) -> str:
    """A checkpoint-shaped dict whose model entry runs code: as a plain pickle or as torch.save's zip file."""
    payload = {"model": {"fc.weight": CreatesMarker(marker)}}
    if container == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    return str(path)


@pytest.fixture(params=[("evil.pkl", "pickle"), ("evil.pth", "pickle"), ("evil.pkl", "zip"), ("evil.pth", "zip")],
                ids=["pkl-pickle", "pth-pickle", "pkl-zip", "pth-zip"])
def hostile(request, tmp_path):
    """(path of a hostile file, marker its code would create)."""
    name, container = request.param
    marker = tmp_path / "marker"
    return write_hostile(tmp_path / name, marker, container), marker


def test_payload_runs_code_when_unpickled_naively(tmp_path):
    # the control: the same payload does create the marker under a plain pickle.loads
    marker = tmp_path / "marker"
    pickle.loads(pickle.dumps(CreatesMarker(marker))).close()
    assert marker.exists()


def test_load_weights_refuses(hostile):
    path, marker = hostile
    with pytest.raises(UnsafePickleError, match=os.path.basename(path)) as err:
        load_weights(nn.Linear(1, 1), path)
    assert not marker.exists()
    assert "weights_only" not in str(err.value)  # torch's advice to load unsafely is not passed on


@pytest.mark.parametrize("key", ["MODEL.WEIGHTS", "MODEL.BACKBONE.WEIGHTS"])
def test_build_model_refuses_config_weights(hostile, key):
    path, marker = hostile
    cfg = resdet.get_cfg()
    cfg.merge_from_file(str(ROOT / "configs" / "cifar" / "resnet20.yaml"))
    cfg.merge_from_list(TINY_CLASSIFIER + [key, path])
    with pytest.raises(UnsafePickleError, match=os.path.basename(path)) as err:
        resdet.build_model(cfg)
    assert isinstance(err.value, UserError) and not marker.exists()


def test_resume_refuses_last_checkpoint(hostile, tmp_path):
    path, marker = hostile
    output = tmp_path / "out"
    output.mkdir()
    os.replace(path, output / "model_0000010.pth")
    (output / "last_checkpoint").write_text("model_0000010.pth")
    checkpointer = Checkpointer(nn.Linear(1, 1), str(output))
    with pytest.raises(CheckpointError, match="model_0000010.pth"):
        checkpointer.resume_or_load("", resume=True)
    assert not marker.exists()


def test_unreadable_files_name_the_file(tmp_path):
    files = {"empty.pth": b"", "garbage.pth": b"\x00not a pickle", "garbage.pkl": b"\x00not a pickle"}
    saved = tmp_path / "saved.pth"
    torch.save({"model": {"w": torch.ones(3)}}, saved)
    files["truncated.pth"] = saved.read_bytes()[:200]
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=name):
            load_weights(nn.Linear(1, 1), str(tmp_path / name))
    with pytest.raises(CheckpointError, match="missing.pth") as err:
        load_weights(nn.Linear(1, 1), str(tmp_path / "missing.pth"))
    assert isinstance(err.value, FileNotFoundError)


def test_torch_zip_named_pkl_still_loads(tmp_path):
    # the reader goes by the contents: a torch.save file named .pkl is read by torch.load(weights_only=True)
    model = nn.Linear(2, 1)
    torch.save({"model": model.state_dict()}, tmp_path / "weights.pkl")
    restored = nn.Linear(2, 1)
    assert len(load_weights(restored, str(tmp_path / "weights.pkl")).loaded) == 2
    torch.testing.assert_close(restored.weight, model.weight)


def run_tool(tool: str, args, datasets_root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, RESDET_DATASETS=str(datasets_root), OMP_NUM_THREADS="1")
    env.pop("RESDET_DEBUG", None)
    return subprocess.run([sys.executable, str(ROOT / "tools" / tool), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def assert_refused(result: subprocess.CompletedProcess, path: str, marker: Path) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert f"error: {path}" in result.stderr
    assert not marker.exists()


def test_convert_weights_refuses(tmp_path):
    marker = tmp_path / "marker"
    for name, container in [("evil.pkl", "pickle"), ("evil.pth", "zip")]:
        path = write_hostile(tmp_path / name, marker, container)
        assert_refused(run_tool("convert_weights.py", [path, str(tmp_path / "out.pth")], tmp_path), path, marker)
        assert not (tmp_path / "out.pth").exists()


TRAIN_DET = ["--config", "configs/toy_frcnn_r18_fpn.yaml", "DATALOADER.NUM_WORKERS", "0", "SOLVER.MAX_ITER", "1",
             "DATASETS.TEST", "()"]


@pytest.mark.parametrize("name,container", [("evil.pkl", "pickle"), ("evil.pth", "pickle")])
def test_train_det_refuses_model_weights(toy_datasets, tmp_path, name, container):
    marker = tmp_path / "marker"
    path = write_hostile(tmp_path / name, marker, container)
    result = run_tool("train_det.py", [*TRAIN_DET, "OUTPUT_DIR", str(tmp_path / "out"), "MODEL.WEIGHTS", path],
                      toy_datasets)
    assert_refused(result, path, marker)


def test_train_det_resume_refuses_last_checkpoint(toy_datasets, tmp_path):
    marker = tmp_path / "marker"
    output = tmp_path / "out"
    output.mkdir()
    path = write_hostile(output / "model_0000010.pth", marker, "zip")
    (output / "last_checkpoint").write_text("model_0000010.pth")
    result = run_tool("train_det.py", ["--resume", *TRAIN_DET, "OUTPUT_DIR", str(output)], toy_datasets)
    assert_refused(result, path, marker)
