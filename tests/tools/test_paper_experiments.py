"""tools/paper_experiments.py on a 2-iteration schedule: fig6 then fig7 write their files; bad arguments exit 2."""
import importlib.util
import json
import os

import pytest
import torch

from resdet.data.datasets.toy_cifar import make_toy_cifar

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RUNS = ["plain20", "plain56", "resnet20", "resnet56"]


def _tool():
    spec = importlib.util.spec_from_file_location("paper_experiments",
                                                  os.path.join(ROOT, "tools", "paper_experiments.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy_cifar10")
    make_toy_cifar(str(out), seed=0, train_per_class=10, test_per_class=2)
    return str(out)


@pytest.fixture
def one_thread():
    """Tiny models on a shared machine: a second thread costs more in synchronisation than it gains."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_fig6_then_fig7(data_dir, tmp_path, one_thread):
    tool, output = _tool(), str(tmp_path / "paper")
    common = ["--output", output, "--data", data_dir]
    assert tool.main(["fig6", *common, "--iters", "2", "--curve-images", "8", "SOLVER.IMS_PER_BATCH", "16"]) == 0
    with open(os.path.join(output, "fig6.json")) as f:
        fig6 = json.load(f)
    assert list(fig6) == RUNS
    for errors in fig6.values():
        assert set(errors) == {"train_err", "test_err"} and all(0 <= v <= 100 for v in errors.values())
    for run in RUNS:
        assert os.path.isfile(os.path.join(output, run, "model_final.pth"))
        with open(os.path.join(output, run, "config.yaml")) as f:
            config = f.read()
        assert "MAX_ITER: 2" in config and "BASE_LR: 0.1" in config and "MOMENTUM: 0.9" in config
    assert os.path.getsize(os.path.join(output, "fig6.png")) > 0

    assert tool.main(["fig7", *common, "--num-images", "8"]) == 0
    with open(os.path.join(output, "fig7.json")) as f:
        fig7 = json.load(f)
    # every 3x3 layer: 6n + 1 of them (the fc is not one)
    assert {run: len(result["std"]) for run, result in fig7.items()} == {"plain20": 19, "plain56": 55,
                                                                         "resnet20": 19, "resnet56": 55}
    assert os.path.getsize(os.path.join(output, "fig7.png")) > 0


@pytest.mark.parametrize("argv, message", [
    (["fig8", "--output", "x"], "invalid choice"),
    (["fig6", "--output", "x", "--iters", "0"], "--iters"),
    (["fig6", "--output", "x", "--iters", "10", "--warmup-iters", "10"], "--warmup-iters"),
    (["fig6", "--output", "x", "--runs", "resnet32"], "invalid choice"),
    (["fig6", "--output", "x", "--data", "/nonexistent"], "make_toy_data.py --cifar"),
    (["fig7", "--output", "/nonexistent/out", "--runs", "resnet20"], "run fig6"),
])
def test_bad_arguments_exit_2(argv, message, data_dir, capsys):
    tool = _tool()
    if "--data" not in argv:
        argv = [*argv, "--data", data_dir]
    try:
        status = tool.run_tool(tool.main, argv)
    except SystemExit as exit_:  # argparse's own errors
        status = exit_.code
    assert status == 2
    assert message in capsys.readouterr().err
