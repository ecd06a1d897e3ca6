"""``python -m laplexops {demo,info,bench}``."""

import sys

from ._cli import main

sys.exit(main())
