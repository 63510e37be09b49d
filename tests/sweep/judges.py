"""The verdict rules: what makes an action GOOD, POOR or BAD (see the package's docstring).
Each judge returns reasons, ``(verdict, text)`` pairs; a case's verdict is the worst of them."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Sequence, Tuple

from .runner import Obs, changes, snapshot

if TYPE_CHECKING:
    from .context import Session

GOOD, POOR, BAD = "GOOD", "POOR", "BAD"
RANK = {GOOD: 0, POOR: 1, BAD: 2}
# log lines that show the model (or its export) was loaded
MODEL_MARKERS = (
    "onnxruntime backend:",
    "using the cached export",
    "backend tensorrt unavailable",
    "making the ONNX export",
    "repairing the ONNX export",
    "falling back to",
)
Reasons = List[Tuple[str, str]]


def verdict(reasons: Reasons) -> str:
    return max((v for v, _ in reasons), key=RANK.__getitem__, default=GOOD)


def base(o: Obs) -> Reasons:
    r: Reasons = []
    if o.timed_out:
        r.append((BAD, f"hung: killed after {o.timeout:.0f} s"))
    elif o.rc is not None and o.rc < 0 and o.sent == -o.rc:  # the signal it was sent: what it wrote is judged apart
        r.append(
            (POOR, f"died of the {signal.Signals(o.sent).name} it was sent (status {o.rc}), not exit {128 - o.rc}")
        )
    elif o.rc is not None and o.rc < 0:
        r.append((BAD, f"killed by signal {-o.rc}"))
    if "Traceback (most recent call last)" in o.err:
        r.append((POOR, "prints a traceback"))
    return r


def slow(o: Obs, session: Session) -> Reasons:
    if any(m in o.err for m in MODEL_MARKERS):
        return [(POOR, "loaded the model before refusing an input it could check at once")]
    limit = max(4.0, session.baseline + 2.0)
    if o.seconds > limit:
        return [(POOR, f"slow to refuse ({o.seconds:.1f} s; a usage error takes {session.baseline:.1f} s)")]
    return []


def refusal(o: Obs, session: Session, code: int, names: Sequence[str] = (), quick: bool = True) -> Reasons:
    """A refusal: exit ``code``, one error line (2) or one failure line per input (1) naming
    ``names``, no traceback, and (``quick``) refused before loading the model."""
    r = base(o)
    if o.timed_out:
        return r
    if o.rc != code:
        r.append((POOR, f"exit {o.rc}, expected {code}" + (" (accepted)" if o.rc == 0 else "")))
    lines = o.lines
    if code == 2:
        errors = [ln for ln in lines if "error:" in ln]
        if len(errors) != 1:
            r.append((POOR, f"{len(errors)} error lines, expected one"))
        text = errors[-1] if errors else o.last
    elif code == 1:
        heads = [i for i, ln in enumerate(lines) if re.search(r"\bfailed\b", ln)]
        text = "\n".join(lines[heads[-1] :]) if heads else ""
        if not heads:
            r.append((POOR, "no list of the failed inputs"))
    else:
        text = o.err
    for name in names:
        if name not in text:
            r.append((POOR, f"the message does not name {name!r}"))
    if quick:
        r += slow(o, session)
    return r


def interrupted(o: Obs, sig: int, command: str) -> Reasons:
    r = base(o)
    if o.timed_out:
        return r
    name = signal.Signals(sig).name
    if o.signalled_at is None:
        r.append((POOR, f"ended (exit {o.rc}) before the {name} was sent: the moment was missed"))
        return r
    if o.rc != 128 + sig and o.rc != -sig:  # (-sig: said by base)
        r.append((POOR, f"exit {o.rc} after {name}, expected {128 + sig}"))
    # one line from the command, naming the signal (``hmdiff run: interrupted (SIGINT)``)
    said = [ln for ln in o.lines if ln.startswith(f"hmdiff {command}") or ln.startswith("hmdiff:")]
    if not (o.last.startswith(f"hmdiff {command}") and name in o.last):
        r.append((POOR, f"the last line does not say that hmdiff {command} stopped on {name}"))
    extra = [ln for ln in o.lines if not ln.startswith(("INFO ", "WARNING ", "hmdiff")) and "%|" not in ln]
    if len(said) > 1 or extra:
        r.append((POOR, f"{len(said) - 1 + len(extra)} more lines than the interrupt line"))
    return r


def unchanged(before: Dict[str, str], root: Path, what: str = "user's files") -> Reasons:
    diff = changes(before, snapshot(root))
    return [(BAD, f"{what} changed: {', '.join(diff[:4])}")] if diff else []


def ok_run(o: Obs, code: int = 0) -> Reasons:
    r = base(o)
    if not o.timed_out and o.rc != code:
        r.append((POOR if o.rc in (1, 2) else BAD, f"exit {o.rc}, expected {code}"))
    return r


def api(res: Dict, words: Sequence[str], error: bool = True) -> Reasons:
    """A Python call that must raise a one-line ``ValueError`` naming ``words``."""
    if not res:
        return [(BAD, "the snippet printed no result (crashed)")]
    a = res.get("call", {})
    if not error:
        return []
    if a.get("ok"):
        return [(POOR, "accepted, expected a ValueError")]
    r: Reasons = []
    msg = a.get("msg", "")
    if not a.get("value_error"):
        r.append((POOR, f"raises {a.get('exc')}, not a ValueError"))
    if "\n" in msg.strip():
        r.append((POOR, "the message is several lines"))
    for w in words:
        if w.lower() not in msg.lower():
            r.append((POOR, f"the message does not name {w!r}"))
    if a.get("s", 0) > 2.0:
        r.append((POOR, f"took {a['s']} s to refuse"))
    return r


def rows_json(o: Obs) -> List[Dict]:
    rows = []
    for line in o.out.splitlines():
        line = line.strip()
        if line.startswith(("{", "[")):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            rows += value if isinstance(value, list) else [value]
    return rows


def records(o: Obs) -> List[Dict]:
    """The per-input records of ``hmdiff run --json`` (those naming a ``path``)."""
    return [x for x in rows_json(o) if "path" in x]


def found_a_person(o: Obs) -> Reasons:
    """A run that exits 0 must have found the person in the demo photo."""
    recs = records(o)
    return [(BAD, "exit 0 without a person")] if o.rc == 0 and not (recs and recs[0].get("people")) else []


def summary_row(o: Obs) -> Dict:
    """The last JSON row printed (``hmdiff bag --json``: its summary), ``{}`` when none."""
    rows = rows_json(o)
    return rows[-1] if rows else {}
