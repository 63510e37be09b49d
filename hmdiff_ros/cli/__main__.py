"""``python -m hmdiff_ros.cli``."""

import sys

from hmdiff_ros.cli import main

sys.exit(main())
