"""Golden-loss regression test.

A regression guard recorded from this implementation (not an external reference): the losses of
two training steps of the tiny shapes model under a fixed seed must stay as stored in
tests/fixtures/golden_losses.json. After an intended numerical change regenerate them with
`python tests/modeling/make_golden_losses.py` (from the repository root) and say why in the
commit message.
"""

import json
import os

import pytest

from .conftest import needs_ops
from .make_golden_losses import compute

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "fixtures", "golden_losses.json")


@needs_ops
def test_losses_match_the_recorded_values():
    with open(GOLDEN) as f:
        stored = json.load(f)["steps"]
    steps = compute()
    assert len(steps) == len(stored) == 2
    for i, (now, ref) in enumerate(zip(steps, stored)):
        assert set(now) == set(ref), i
        for k in ref:
            assert now[k] == pytest.approx(ref[k], rel=1e-3, abs=1e-5), (i, k, now[k], ref[k])
