"""tools/plot_curves.py reads metrics.jsonl (as the trainer writes it) and writes a PNG."""

import json

import pytest

from testutils.tools import load_tool

plot_curves = load_tool("plot_curves")


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_plot_writes_png_and_dedups_resumed_iterations(tmp_path):
    recs = [
        {
            "type": "train",
            "iter": i,
            "loss": 2.0 / i,
            "loss_a": 1.0 / i,
            "loss_a_avg": 1.0,
            "lr": 0.01,
        }
        for i in (1, 20, 40)
    ]
    recs.append(
        {"type": "train", "iter": 40, "loss": 0.5, "loss_a": 0.25, "lr": 0.01}
    )  # after a resume
    recs.append({"type": "eval", "iter": 40, "shapes_val/bbox/AP": 0.3})
    metrics = tmp_path / "metrics.jsonl"
    _write(metrics, recs)
    train, evals = plot_curves.read_metrics(str(metrics))
    assert [r["iter"] for r in train] == [1, 20, 40] and train[-1]["loss"] == 0.5
    assert evals == [recs[-1]]
    out = tmp_path / "curves.png"
    assert plot_curves.main(["--metrics", str(metrics), "--output", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="--metrics"):
        plot_curves.read_metrics(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"iter": 1}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        plot_curves.read_metrics(str(bad))
    empty = tmp_path / "empty.jsonl"
    _write(empty, [{"type": "eval", "iter": 1, "x/AP": 0.1}])
    with pytest.raises(ValueError, match="no training records"):
        plot_curves.plot_curves(str(empty), str(tmp_path / "x.png"))
