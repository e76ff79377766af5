"""Helpers shared by the tests (importable as `testutils`: pytest.ini puts `tests/` on the path).

`toy_training`: the stand-in model, batches and config of the training-loop tests;
`tools`: the tools as modules and the tiny shapes-config command line of the tool tests.
"""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
