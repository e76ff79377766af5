"""tools/summarize_mnist_det.py: the per-config table (mean ± std over seeds) and the per-run
table (s/it from the training log line, wall times, load), and one error line for a bad file."""

import json
import statistics

from testutils.tools import load_tool


def _result(tmp_path, cfg, seed, ap, **extra):
    metrics = {iou: {k: ap for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")} for iou in
               ("bbox", "segm")}  # fmt: skip
    r = {"config": cfg, "seed": seed, "wall_time_s": 600, "metrics": metrics, **extra}
    path = tmp_path / f"{cfg}_s{seed}.json"
    path.write_text(json.dumps(r))
    return str(path)


def test_tables(tmp_path, capsys):
    paths = [
        _result(tmp_path, "1_regular", 1, 0.5),
        _result(
            tmp_path,
            "1_regular",
            0,
            0.3,
            training_time="0:08:20 (1.2500 s / it)",
            train_wall_s=500,
            eval_wall_s=100,
            load_1min_mean=3.25,
        ),  # fmt: skip
        _result(tmp_path, "3_dcnv2", 0, 0.4, resumed=True),
    ]
    out = tmp_path / "table.md"
    assert load_tool("summarize_mnist_det").main([*paths, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.read_text() == text
    rows = {line.split(" | ")[0].strip("| "): line for line in text.splitlines()}
    regular = [100 * v for v in (0.3, 0.5)]
    spread = f"{statistics.mean(regular):.1f} ± {statistics.stdev(regular):.1f}"
    assert rows["1_regular"].count(spread) == 10  # 5 bbox and 5 segm columns
    assert rows["1_regular"].startswith("| 1_regular | 0,1 |")
    assert rows["3_dcnv2"].count(" 40.0 ") == 10  # one seed: no spread
    assert rows["1_regular s0"].split(" | ")[3:] == ["1.25", "10.0 min (8.3 + 1.7)", "3.2 |"]
    assert rows["1_regular s1"].split(" | ")[3:] == ["?", "10.0 min", "? |"]
    assert "resumed" in rows["3_dcnv2 s0"]


def test_bad_file_is_one_error_line(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"config": "1_regular"}))
    assert load_tool("summarize_mnist_det").main([str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {bad}")
