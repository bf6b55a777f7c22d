"""One way out for user errors: every tool ends a user error with `error: <message>` on stderr naming the file, key
or value, exit status 2 and no traceback; --debug / RESDET_DEBUG=1 show the traceback; bugs keep theirs."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from resdet.errors import ConfigError, UserError, register_user_error
from resdet.utils import cli

ROOT = Path(__file__).resolve().parents[2]
TOY_DET = "configs/toy_frcnn_r18_fpn.yaml"
TOY_CLS = "configs/toy_cls_r18.yaml"


def run_tool(tool: str, args, datasets_root=None, **env_vars) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", RESDET_DATASETS=str(datasets_root or ROOT / "no_datasets"), **env_vars)
    if "RESDET_DEBUG" not in env_vars:
        env.pop("RESDET_DEBUG", None)
    return subprocess.run([sys.executable, str(ROOT / "tools" / tool), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def error_lines(result: subprocess.CompletedProcess):
    """The `error:` lines of stderr, after checking the exit status and that no traceback was printed."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


# ------------------------------------------------------------------ in process: run_tool and the parser


def raising(error: BaseException):
    """A tool body that fails with `error`."""
    def body():
        raise error
    return body


def test_run_tool_prints_user_errors_and_returns_2(capsys):
    bad_config = ConfigError("configs/x.yaml: SOLVER.BASE_LR is -1.0; it must be a positive, finite number")
    assert cli.run_tool(raising(bad_config), debug=False) == 2
    assert capsys.readouterr().err == ("error: configs/x.yaml: SOLVER.BASE_LR is -1.0; it must be a positive, "
                                       "finite number\n")
    assert cli.run_tool(lambda: 0) == 0 and cli.run_tool(lambda: ["written"]) == 0 and cli.run_tool(lambda: 3) == 3


def test_run_tool_lets_bugs_and_debug_through(monkeypatch):
    with pytest.raises(KeyError):
        cli.run_tool(raising(KeyError("a bug keeps its traceback")), debug=False)
    with pytest.raises(ConfigError):
        cli.run_tool(raising(ConfigError("x")), debug=True)
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(ConfigError):
        cli.run_tool(raising(ConfigError("x")))


def test_registered_types_are_user_errors(capsys):
    @register_user_error
    class Diverged(FloatingPointError):
        pass

    assert cli.run_tool(raising(Diverged("loss is nan at iteration 3")), debug=False) == 2
    assert capsys.readouterr().err == "error: loss is nan at iteration 3\n"
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)


def test_option_after_the_overrides_is_named(capsys):
    parser = cli.ToolArgumentParser()
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    assert parser.parse_args(["--resume", "SOLVER.MAX_ITER", "40", "SEED", "-1"]).opts == ["SOLVER.MAX_ITER", "40",
                                                                                          "SEED", "-1"]
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["SOLVER.MAX_ITER", "40", "--resume"])
    assert exit_info.value.code == 2
    assert "--resume comes after the KEY VALUE overrides" in capsys.readouterr().err


def test_debug_flag_is_read_by_run_tool(monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    parser = cli.ToolArgumentParser()
    parser.parse_args(["--debug"])
    try:
        with pytest.raises(ConfigError):
            cli.run_tool(raising(ConfigError("x")))
    finally:
        parser.parse_args([])  # the next command line decides again
    assert not cli.debug_requested()


# ------------------------------------------------------------------ black box: the tools


def test_train_det_bad_value_names_key_and_file():
    result = run_tool("train_det.py", ["--config", TOY_DET, "SOLVER.BASE_LR", "-0.1"])
    line = error_lines(result)
    assert "SOLVER.BASE_LR" in line and TOY_DET in line and "positive" in line


def test_debug_shows_the_traceback():
    # (RESDET_DEBUG=1 is the same switch: test_run_tool_lets_bugs_and_debug_through)
    result = run_tool("train_det.py", ["--debug", "--config", TOY_DET, "SOLVER.MAX_ITER", "0"])
    assert result.returncode == 1 and "Traceback" in result.stderr and "ConfigError: " in result.stderr


def test_train_det_misplaced_flag_is_told():
    result = run_tool("train_det.py", ["--config", TOY_DET, "SOLVER.MAX_ITER", "40", "--resume"])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--resume comes after the KEY VALUE overrides" in result.stderr


def test_train_cls_batch_not_divisible_by_processes_is_told_once():
    # refused before any process is spawned, so the message appears once
    result = run_tool("train_cls.py", ["--num-gpus", "3", "--config", TOY_CLS, "SOLVER.IMS_PER_BATCH", "4"])
    line = error_lines(result)
    assert "SOLVER.IMS_PER_BATCH" in line and TOY_CLS in line and "3 processes" in line


def test_train_det_num_classes_disagreeing_with_dataset(toy_datasets, tmp_path):
    result = run_tool("train_det.py", ["--config", TOY_DET, "OUTPUT_DIR", str(tmp_path), "MODEL.ROI_HEADS.NUM_CLASSES",
                                       "80"], toy_datasets)
    line = error_lines(result)
    assert "MODEL.ROI_HEADS.NUM_CLASSES is 80" in line and "'toy_coco_train' has 4 classes" in line and TOY_DET in line


def test_train_det_broken_annotations(tmp_path):
    annotations = tmp_path / "broken.json"
    annotations.write_text("{not json")
    result = run_tool("train_det.py", ["--config", TOY_DET, "OUTPUT_DIR", str(tmp_path / "out"), "DATASETS.TRAIN",
                                       f"('coco:{annotations}:{tmp_path}',)", "DATASETS.TEST", "()"])
    assert str(annotations) in error_lines(result)


@pytest.mark.parametrize("tool,args,needle", [
    ("analyze_model.py", ["--config", TOY_CLS, "MODEL.NOT_A_KEY", "1"], "MODEL.NOT_A_KEY"),
    ("benchmark.py", ["--config", "missing.yaml", "--task", "infer"], "missing.yaml"),
    ("convert_weights.py", ["missing.pth", "{tmp}/out.pth"], "missing.pth"),
    ("demo.py", ["--config", "missing.yaml", "--input", "a.jpg", "--output", "{tmp}/vis"], "missing.yaml"),
    ("export_model.py", ["--config", TOY_CLS, "--format", "onnx", "--output", "{tmp}", "MODEL.WEIGHTS",
                         "missing.pth"], "missing.pth"),
    ("layer_response.py", ["--config", TOY_CLS, "--num-images", "1", "--output", "{tmp}"], "no_datasets"),
    ("plot_curves.py", ["--metrics", "missing/metrics.json"], "missing/metrics.json"),
    ("make_toy_data.py", ["--out", "README.md/toy"], "README.md/toy"),
], ids=lambda value: value if isinstance(value, str) and value.endswith(".py") else "")
def test_every_tool_reports_user_errors(tool, args, needle, tmp_path):
    result = run_tool(tool, [arg.replace("{tmp}", str(tmp_path)) for arg in args])
    assert needle in error_lines(result)


class _UnreadableDataset:
    """A dataset whose every item is a user error, as an unreadable image is."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int):
        raise ConfigError(f"/data/images/{index:06d}.jpg: truncated JPEG")


def test_worker_error_message_without_worker_traceback():
    """torch re-raises a loader worker's error with the worker's traceback in its message; the user sees the cause."""
    import torch.utils.data

    from resdet.errors import error_message

    loader = torch.utils.data.DataLoader(_UnreadableDataset(), num_workers=1)
    with pytest.raises(ConfigError) as caught:
        next(iter(loader))
    assert "Original Traceback" in str(caught.value)  # torch's wrapping, which the message must drop
    assert error_message(caught.value) == "/data/images/000000.jpg: truncated JPEG"
