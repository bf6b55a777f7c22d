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


IMAGENET_RUNS = ["plain18", "plain34", "resnet18", "resnet34"]
# Small crops and batches: the 2-iteration runs check the pipeline, not the numbers.
TINY = ["SOLVER.IMS_PER_BATCH", "8", "INPUT.SCALE_RANGE", "(36, 44)", "INPUT.TEST_RESIZE", "36", "INPUT.CROP.SIZE",
        "32", "DATALOADER.NUM_WORKERS", "0"]


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    from resdet.data.datasets.toy_imagenet import make_toy_imagenet

    out = str(tmp_path_factory.mktemp("datasets"))
    make_toy_imagenet(out, seed=0, train_per_class=1, val_per_class=1, processes=1)
    return out


def _reference_ten_crop_errors(weights: str, val_dir: str, overrides) -> tuple:
    """(top-1, top-5) error (%) of the saved model with torchvision's ten_crop on OpenCV-resized images."""
    import cv2
    from torchvision.transforms.v2.functional import ten_crop

    from resdet import build_model
    from resdet.config import setup_cfg

    config = os.path.join(ROOT, "configs", "toy_imagenet", "resnet18.yaml")
    model = build_model(setup_cfg(config, ["MODEL.WEIGHTS", weights, *overrides])).eval()
    wnids = sorted(os.listdir(val_dir))
    top1 = top5 = count = 0
    for label, wnid in enumerate(wnids):
        for name in sorted(os.listdir(os.path.join(val_dir, wnid))):
            image = cv2.imread(os.path.join(val_dir, wnid, name))  # BGR, the configs' INPUT.FORMAT
            scale = 36 / min(image.shape[:2])
            size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
            image = torch.from_numpy(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1)
            crops = torch.stack(ten_crop(image.float(), [32, 32]))  # (10, 3, 32, 32)
            with torch.no_grad():
                probabilities = torch.softmax(model(crops), dim=1).mean(dim=0)
            ranked = probabilities.argsort(descending=True)
            top1 += int(ranked[0] != label)
            top5 += int(label not in ranked[:5])
            count += 1
    return 100.0 * top1 / count, 100.0 * top5 / count


def test_fig4_then_table3(imagenet_root, tmp_path, monkeypatch, one_thread, capsys):
    monkeypatch.setenv("RESDET_DATASETS", imagenet_root)
    monkeypatch.setenv("RESDET_CACHE", str(tmp_path / "cache"))
    tool, output = _tool(), str(tmp_path / "paper_imagenet")
    common = ["--output", output, "--iters", "2", "--curve-images", "20", "--eval-points", "1", *TINY]
    assert tool.main(["fig4", *common]) == 0
    table2 = capsys.readouterr().out
    with open(os.path.join(output, "fig4.json")) as f:
        fig4 = json.load(f)
    assert list(fig4) == IMAGENET_RUNS
    for run, result in fig4.items():
        for mode in ("ten_crop", "center"):
            assert 0 <= result[mode]["top5_err"] <= result[mode]["top1_err"] <= 100
        assert f"| {tool.paper_imagenet.LABELS[run]} | {result['ten_crop']['top1_err']:.2f} |" in table2
        with open(os.path.join(output, run, "config.yaml")) as f:
            config = f.read()
        # the paper's recipe: SGD with momentum 0.9 and weight decay 1e-4, lr / 10 twice
        assert "MAX_ITER: 2" in config and "MOMENTUM: 0.9" in config and "WEIGHT_DECAY: 0.0001" in config
        curves = tool.paper_imagenet.error_curves(os.path.join(output, run))
        assert curves["train_err"][0] and curves["val_err"][0] == [1]  # the last iteration, 0-based
    assert "| plain-34 |" in table2 and "| 28.54 |" in table2  # the paper's Table 2 beside
    assert os.path.getsize(os.path.join(output, "fig4.png")) > 0
    # the table's 10-crop error is the saved model's, measured independently
    reference = _reference_ten_crop_errors(os.path.join(output, "resnet18", "model_final.pth"),
                                           os.path.join(imagenet_root, "imagenet", "val"), TINY)
    measured = fig4["resnet18"]["ten_crop"]
    assert abs(reference[0] - measured["top1_err"]) <= 1.0 and abs(reference[1] - measured["top5_err"]) <= 1.0

    reused = {run: os.path.getmtime(os.path.join(output, run, "errors.json")) for run in ("plain34", "resnet34")}
    assert tool.main(["table3", *common]) == 0
    table3 = capsys.readouterr().out
    with open(os.path.join(output, "table3.json")) as f:
        results = json.load(f)
    assert list(results) == ["plain34", "resnet34", "resnet34_B", "resnet34_C"]
    assert {run: os.path.getmtime(os.path.join(output, run, "errors.json")) for run in reused} == reused
    assert results["plain34"] == fig4["plain34"]
    for run in ("resnet34_B", "resnet34_C"):
        with open(os.path.join(output, run, "config.yaml")) as f:
            assert f"SHORTCUT: {run[-1]}" in f.read()
    assert "| ResNet-34 C |" in table3 and "| 24.19 | 7.40 |" in table3


def test_fig4_without_the_set_says_how_to_write_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RESDET_DATASETS", str(tmp_path))
    tool = _tool()
    assert tool.run_tool(tool.main, ["fig4", "--output", str(tmp_path / "out"), "--iters", "2"]) == 2
    assert "make_toy_data.py --imagenet" in capsys.readouterr().err
