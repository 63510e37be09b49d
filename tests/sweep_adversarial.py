#!/usr/bin/env python
"""Adversarial sweep of the ``hmdiff`` command line and Python API: the script to run (not a
pytest module). The cases, the verdict rules and the table are in the package ``tests/sweep/``.

    python tests/sweep_adversarial.py                      # every case, one after another
    python tests/sweep_adversarial.py --only bag,api       # a subset of the surfaces
    python tests/sweep_adversarial.py --ids run-fifo-input # single cases (repeatable)
    python tests/sweep_adversarial.py --json rows.json     # also write the rows
    python tests/sweep_adversarial.py --list               # the cases, without running them
"""

import sys

from sweep.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
