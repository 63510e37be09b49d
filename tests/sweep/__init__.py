"""Adversarial sweep: hostile inputs as a new user would try them, over every surface a user
touches (not a pytest module: run it as a script).

    python tests/sweep_adversarial.py                      # every case, one after another
    python tests/sweep_adversarial.py --only bag,api       # a subset of the surfaces
    python tests/sweep_adversarial.py --ids run-fifo-input # single cases (repeatable)
    python tests/sweep_adversarial.py --json rows.json     # also write the rows
    python tests/sweep_adversarial.py --list               # the cases, without running them

Surfaces: export (the ONNX export cache, ``hmdiff export``, ``--engines``, ``HMDIFF_CACHE``),
run (``hmdiff run`` on images and videos, interrupts, re-runs and concurrent runs into one
``--out``), bench (``hmdiff bench``, ``hmdiff bench-pipeline``), eval (``hmdiff eval``,
``eval-real``, ``eval-protocol`` on small bad data), api (``build_pipeline``,
``Pipeline.__call__``, ``load_model``, ``load_checkpoint``) and bag (``hmdiff bag`` without ROS).

Each case sets up files in a fresh temporary folder (a user's folder ``user/`` whose files are
hashed before and after), runs one action in a subprocess with a timeout (``python -m
hmdiff_ros.cli ...`` or a Python snippet), and a judge classifies what it saw:

- GOOD: the contract holds: a correct result, or a clear one-line error naming the input and
  what was expected, the right exit code (0 ok, 1 some inputs failed, 2 usage/config error,
  130 SIGINT, 143 SIGTERM), no traceback, the user's files unchanged.
- POOR: works, but the message is unclear, multi-line or names nothing, the exit code is
  wrong (also a death by the very signal that was sent, status -2, where 130 is promised), a
  traceback is printed, or it is slow to refuse (the model was loaded before an input that
  could be checked at once was refused: seen in the log, or the refusal took longer than the
  start-up of a plain usage error plus 2 s, and at least 4 s; a case slow by the clock alone
  runs a second time and the second try counts, as the machine is shared).
- BAD: a wrong result presented as right, data lost or changed, a crash that loses output, a
  hang past the timeout.

Layout: ``runner`` (a subprocess with a timeout and signals sent at chosen moments),
``judges`` (the verdict rules), ``context`` (the session's shared assets, a case's folder and
the case registry), one ``*_cases`` module per surface, and ``__main__`` (the sweep and its
table); ``tests/sweep_adversarial.py`` runs it, as does ``python -m tests.sweep``. No module
here is named ``test_*``, so pytest collects none of them.

Every case that may load a model gets its own ``HMDIFF_CACHE``: a copy of one export cache
prepared at the start (the user's cache is never touched). Nothing runs in parallel except
the processes a case starts together on purpose.
"""
