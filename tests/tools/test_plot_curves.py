"""tools/plot_curves.py on synthetic metrics.json files with mixed training and evaluation rows."""
import importlib.util
import json
import os

import matplotlib.image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _load_tool():
    spec = importlib.util.spec_from_file_location("plot_curves", os.path.join(ROOT, "tools", "plot_curves.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_metrics(path, slope):
    rows = []
    for iteration in range(19, 400, 20):
        rows.append({"iteration": iteration, "total_loss": 2.3 * (1 - slope * iteration / 400), "lr": 0.1})
        if (iteration + 1) % 100 == 0:
            rows.append({"iteration": iteration, "eval/top1": 40 + 100 * slope * iteration / 400, "eval/top5": 90.0})
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")
    return rows


def test_writes_png_with_train_and_test_curves(tmp_path, capsys):
    tool = _load_tool()
    _write_metrics(tmp_path / "plain20" / "metrics.json", 0.3)
    _write_metrics(tmp_path / "resnet20" / "metrics.json", 0.5)
    output = tmp_path / "curves.png"
    assert tool.main(["--metrics", str(tmp_path / "plain20" / "metrics.json"),
                      str(tmp_path / "resnet20" / "metrics.json"), "--output", str(output)]) == 0
    image = matplotlib.image.imread(str(output))
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    printed = capsys.readouterr().out
    # 20 training rows and 4 evaluation rows per run
    assert "plain20: 20 total_loss points, 4 test-error points" in printed
    assert "resnet20: 20 total_loss points, 4 test-error points" in printed


def test_test_error_is_100_minus_top1(tmp_path):
    from resdet.utils.plots import metric_series

    rows = _write_metrics(tmp_path / "run" / "metrics.json", 0.5)
    iterations, top1 = metric_series(rows, "top1")
    assert iterations == [99, 199, 299, 399]
    assert top1 == [40 + 100 * 0.5 * i / 400 for i in iterations]
    # a row without an iteration inherits the previous one's
    assert metric_series([{"iteration": 5, "total_loss": 1.0}, {"top1": 60.0}], "top1") == ([5], [60.0])


def test_missing_key_is_an_error(tmp_path):
    tool = _load_tool()
    path = tmp_path / "run" / "metrics.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"iteration": 1, "lr": 0.1}) + "\n")
    assert tool.main(["--metrics", str(path), "--output", str(tmp_path / "x.png")]) == 2
    assert not (tmp_path / "x.png").exists()
