"""Record (or check) the golden losses of tests/modeling/test_golden_losses.py.

Regenerate after an intended numerical change, from the repository root:

    python tests/modeling/make_golden_losses.py            # rewrites tests/fixtures/golden_losses.json
    python tests/modeling/make_golden_losses.py --check    # prints the differences only

The values are a regression guard recorded from this implementation (not an external reference).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Dict, List

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:  # run as a script: the tree's own package first
    sys.path.insert(0, ROOT)
GOLDEN = os.path.join(HERE, "..", "fixtures", "golden_losses.json")


def compute() -> List[Dict[str, float]]:
    """Losses of two training steps (SGD lr 0.01 in between) of the tiny shapes model, seed 0."""
    sys.path.insert(0, HERE)
    from conftest import tiny_batch, tiny_cfg  # noqa: E402

    from detection.modeling import build_detection_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = build_detection_model(tiny_cfg()).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        images, targets = tiny_batch()
        steps = []
        for _ in range(2):
            losses = model(images, targets)
            steps.append({k: float(v.detach()) for k, v in sorted(losses.items())})
            opt.zero_grad()
            sum(losses.values()).backward()
            opt.step()
        return steps
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored values only")
    args = parser.parse_args()
    steps = compute()
    if args.check:
        with open(GOLDEN) as f:
            stored = json.load(f)["steps"]
        for i, (a, b) in enumerate(zip(steps, stored)):
            for k in a:
                print(f"step {i} {k}: now {a[k]:.7g} stored {b.get(k, float('nan')):.7g}")
        return
    with open(GOLDEN, "w") as f:
        json.dump(
            {
                "note": "regression guard recorded from this implementation by "
                "tests/modeling/make_golden_losses.py (tiny shapes config, seed 0, 1 thread)",
                "torch": torch.__version__,
                "steps": steps,
            },
            f,
            indent=2,
        )
        f.write("\n")
    print(json.dumps(steps, indent=2))


if __name__ == "__main__":
    main()
