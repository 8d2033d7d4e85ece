"""Run tinynet's benchmark from the source tree: ``python bench/run.py [options]``.

Without --json/--markdown it writes bench/results/latest.json and latest.md; see
bench/README.md for what is measured. ``tinynet bench`` is the same benchmark, installed.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tinynet.benchmark import main  # noqa: E402

if __name__ == "__main__":
    argv = sys.argv[1:]
    results = os.path.join(ROOT, "bench", "results")
    if "--json" not in argv and "--list" not in argv:
        argv += ["--json", os.path.join(results, "latest.json")]
    if "--markdown" not in argv and "--list" not in argv:
        argv += ["--markdown", os.path.join(results, "latest.md")]
    raise SystemExit(main(argv))
