"""Golden-loss regression test.

A regression guard recorded from this implementation (not an external reference): the losses of
two training steps of the tiny shapes model under a fixed seed must stay as stored in
tests/data/golden_losses.json. After an intended numerical change regenerate them with
`python tests/modeling/make_golden_losses.py` (from the repository root) and say why in the
commit message.
"""

import json
import os

import pytest

from .conftest import needs_ops

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "data", "golden_losses.json")


@needs_ops
def test_losses_match_the_recorded_values():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_golden_losses", os.path.join(os.path.dirname(__file__), "make_golden_losses.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with open(GOLDEN) as f:
        stored = json.load(f)["steps"]
    steps = mod.compute()
    assert len(steps) == len(stored) == 2
    for i, (now, ref) in enumerate(zip(steps, stored)):
        assert set(now) == set(ref), i
        for k in ref:
            assert now[k] == pytest.approx(ref[k], rel=1e-3, abs=1e-5), (i, k, now[k], ref[k])
