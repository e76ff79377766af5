"""Run tools/train.py with every checkpoint's final rename held back, so a test can kill the
process while the checkpoint is written but not yet in place.

    python tests/testutils/slow_checkpoint_rename.py SECONDS tools/train.py ARGS...

`atomic_write` fsyncs a temporary `.<name>.*.tmp` file and then renames it over the target with
`os.replace`; here that rename (of a `.tmp` onto a `.pth`) first sleeps SECONDS.
"""

import os
import runpy
import sys
import time

_replace = os.replace


def main() -> None:
    delay, script = float(sys.argv[1]), sys.argv[2]

    def slow_replace(src, dst, *args, **kwargs):
        if str(src).endswith(".tmp") and str(dst).endswith(".pth"):
            time.sleep(delay)
        return _replace(src, dst, *args, **kwargs)

    os.replace = slow_replace
    sys.argv = [script] + sys.argv[3:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
