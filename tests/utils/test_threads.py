"""`import detection` sets OMP_WAIT_POLICY=PASSIVE before torch loads, keeps a user's value, and
does nothing once torch is loaded (libgomp has read its environment by then)."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHOW = "import os; print(os.environ.get('OMP_WAIT_POLICY', '<unset>'))"


def _run(code, **env):
    full = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    full.update(env)
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


@pytest.mark.parametrize(
    "code, env, expected",
    [
        (f"import detection; {SHOW}", {}, "PASSIVE"),
        (f"import detection; {SHOW}", {"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE"),
        (f"import torch, detection; {SHOW}", {}, "<unset>"),
    ],
)
def test_openmp_wait_policy_default(code, env, expected):
    assert _run(code, **env) == expected
