"""``python -m tinynet.benchmark``: the same as ``tinynet bench``."""

from . import main

raise SystemExit(main())
