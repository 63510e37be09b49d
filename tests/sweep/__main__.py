"""The sweep: runs the chosen cases one after another, prints a line per case as it ends, then
the table of rows (``| id | surface | case | verdict | observed |``) and the counts."""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

from . import __doc__ as PACKAGE_DOC
from .context import CASES, Case, Ctx, Session, hmdiff
from .judges import BAD, GOOD, POOR, Reasons, verdict
from .runner import Obs, run

SURFACES = ("export", "run", "bench", "eval", "api", "bag")
# each surface's module registers its cases as it is imported: the sweep runs them in this order
for _surface in SURFACES:
    importlib.import_module(f".{_surface}_cases", __package__)


def run_case(session: Session, cs: Case) -> Dict:
    """One case; a case judged slow by the clock alone (the machine is shared) runs once more
    and the second try counts."""
    row = _run_case(session, cs)
    if any("slow to refuse" in r for r in row["reasons"]):
        first = row["seconds"]
        row = _run_case(session, cs)
        row["reasons"].append(f"note: run twice, first try {first} s")
    return row


def _run_case(session: Session, cs: Case) -> Dict:
    folder = Path(tempfile.mkdtemp(prefix=f"{cs.id[:40]}-", dir=session.root))
    ctx = Ctx(session, folder)
    t0 = time.monotonic()
    try:
        obs, reasons = cs.fn(ctx)
    except Exception as exc:  # the sweep's own failure to set up or judge
        obs, reasons = None, [(POOR, f"sweep error: {type(exc).__name__}: {str(exc)[:160]}")]
    # a case's leftover folders may hold fifos and big files: cleared as it ends
    shutil.rmtree(folder, ignore_errors=True)
    dedup: Reasons = []
    for r in reasons:
        if r not in dedup:
            dedup.append(r)
    return {
        "id": cs.id,
        "surface": cs.surface,
        "case": cs.what,
        "verdict": verdict(dedup),
        "rc": obs.rc if obs else None,
        "last_stderr": (_summary(obs) if obs else "")[:200],
        "seconds": round(obs.seconds if obs else time.monotonic() - t0, 1),
        "case_seconds": round(time.monotonic() - t0, 1),
        "reasons": [f"{v}: {t}" for v, t in dedup],
        "signal_at_s": round(obs.signalled_at, 2) if obs and obs.signalled_at is not None else None,
        "stderr_tail": obs.err[-1500:] if obs else "",
        "stdout_tail": obs.out[-600:] if obs else "",
    }


def _summary(obs: Obs) -> str:
    """The last stderr line; for a Python snippet, what its call returned or raised."""
    try:
        call = obs.result().get("call")
    except ValueError:
        call = None
    if not isinstance(call, dict) or ("value" not in call and "exc" not in call):
        return obs.last
    if not call.get("ok"):
        return f"{call.get('exc')}: {' '.join(str(call.get('msg')).split())}"
    value = call.get("value")
    return f"returned {len(value)} people" if isinstance(value, list) else f"returned {str(value)[:80]}"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=PACKAGE_DOC.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--only", default=None, help=f"comma-separated surfaces: {', '.join(SURFACES)}")
    p.add_argument("--ids", action="append", default=[], help="run only this case id (repeatable)")
    p.add_argument("--json", default=None, metavar="PATH", help="write the rows as JSON")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--keep", action="store_true", help="keep the session folder (assets, prepared cache)")
    args = p.parse_args(argv)
    chosen = CASES
    if args.only:
        wanted = {s.strip() for s in args.only.split(",") if s.strip()}
        unknown = wanted - set(SURFACES)
        if unknown:
            p.error(f"--only: unknown surfaces {sorted(unknown)}; choose from {', '.join(SURFACES)}")
        chosen = [cs for cs in chosen if cs.surface in wanted]
    if args.ids:
        unknown = set(args.ids) - {cs.id for cs in CASES}
        if unknown:
            p.error(f"--ids: unknown cases {sorted(unknown)}")
        chosen = [cs for cs in chosen if cs.id in args.ids]
    if args.list:
        for cs in chosen:
            print(f"{cs.id:45} {cs.surface:7} {cs.what}")
        print(f"{len(chosen)} cases")
        return 0
    root = Path(tempfile.mkdtemp(prefix="hmdiff-sweep-"))
    session = Session(root)
    t_start = time.monotonic()
    rows: List[Dict] = []
    try:
        (root / "baseline").mkdir()
        session.baseline = run(hmdiff("bench", "--repeats", "0"), root / "baseline", session.env(), 60).seconds
        print(f"sweep: {len(chosen)} cases; a usage error takes {session.baseline:.1f} s here", file=sys.stderr)
        for i, cs in enumerate(chosen, 1):
            row = run_case(session, cs)
            rows.append(row)
            print(
                f"[{i}/{len(chosen)}] {row['verdict']:4} {cs.id} ({row['case_seconds']} s) {'; '.join(row['reasons'])}",
                file=sys.stderr,
                flush=True,
            )
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"session folder kept: {root}", file=sys.stderr)
    print("| id | surface | case | verdict | observed |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        seen = f"exit {row['rc']}, {row['seconds']} s: `{row['last_stderr'][:140]}`"
        if row["reasons"]:
            seen += " — " + "; ".join(row["reasons"])
        print(f"| {row['id']} | {row['surface']} | {cell(row['case'])} | {row['verdict']} | {cell(seen)} |")
    counts = {v: sum(r["verdict"] == v for r in rows) for v in (GOOD, POOR, BAD)}
    total = time.monotonic() - t_start
    print(f"\n{len(rows)} cases in {total:.0f} s: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "counts": counts, "seconds": round(total)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
