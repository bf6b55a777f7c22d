"""tools/export_model.py from the command line: a classifier to torch.export with its model.json, and user errors
(missing weights, an unknown key or format) ending in one line on stderr and exit status 2."""
import json
import os
import runpy
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(REPO, "tools", "export_model.py")
TOY_CLS = os.path.join(REPO, "configs", "toy_cls_r18.yaml")


def run_tool(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, TOOL, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def test_classifier_to_torch_export(tmp_path):
    result = run_tool("--config", TOY_CLS, "--format", "torch_export", "--output", str(tmp_path), "MODEL.DEVICE", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    info = json.loads((tmp_path / "model.json").read_text())
    assert info["file"] == "model.pt2" and info["outputs"] == ["logits"] and info["input"]["shape"][0] == "batch"
    assert info["num_classes"] == len(info["class_names"]) == 10 and info["crop_size"] == 64
    assert "MODEL.WEIGHTS is empty" in result.stdout + result.stderr  # random weights export, with a warning
    program = torch.export.load(str(tmp_path / "model.pt2"))
    assert program.module()(torch.rand(3, 3, 40, 56) * 255).shape == (3, 10)


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    main = runpy.run_path(TOOL)["main"]
    common = ["--format", "onnx", "--output", str(tmp_path)]
    for args, needle in [(["--config", TOY_CLS, *common, "MODEL.WEIGHTS", "nope.pth"], "nope.pth"),
                         (["--config", TOY_CLS, *common, "MODEL.NOPE", "1"], "MODEL.NOPE"),
                         (["--config", "nope.yaml", *common], "nope.yaml")]:
        assert main(args) == 2
        error = capsys.readouterr().err
        assert needle in error and error.count("\n") == 1, error
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", TOY_CLS, "--format", "tflite", "--output", str(tmp_path)])
    assert exit_info.value.code == 2 and "tflite" in capsys.readouterr().err
