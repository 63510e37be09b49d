"""Running one action of a case: a subprocess with a timeout, in its own process group, with
signals sent at chosen moments, and what it did (``Obs``); plus the file snapshots that show
whether a user's files were touched."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple


@dataclass
class Obs:
    """What one action did."""

    rc: int | None
    out: str
    err: str
    seconds: float
    timed_out: bool = False
    timeout: float = 0.0
    signalled_at: float | None = None
    sent: int | None = None  # the signal the case sent

    @property
    def lines(self) -> List[str]:
        return [ln.strip() for ln in re.split(r"[\r\n]+", self.err) if ln.strip()]

    @property
    def last(self) -> str:
        lines = self.lines
        return lines[-1] if lines else ""

    def result(self) -> Dict:
        """The ``RESULT {json}`` line a Python snippet printed (``{}`` when none)."""
        for line in reversed(self.out.splitlines()):
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        return {}


def _pump(stream, sink: List[str]) -> None:
    for chunk in iter(lambda: stream.read(1), ""):
        sink.append(chunk)
    stream.close()


def start(cmd: Sequence[str], cwd: Path, env: Dict[str, str]) -> Tuple[subprocess.Popen, List[str], List[str], list]:
    proc = subprocess.Popen(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,  # its own process group: a hang is killed whole, nothing else
    )
    out: List[str] = []
    err: List[str] = []
    threads = [
        threading.Thread(target=_pump, args=(s, b), daemon=True) for s, b in ((proc.stdout, out), (proc.stderr, err))
    ]
    for t in threads:
        t.start()
    return proc, out, err, threads


def finish(
    proc: subprocess.Popen,
    out: List[str],
    err: List[str],
    threads: list,
    t0: float,
    timeout: float,
    trigger: Callable[[float, str, str], bool] | None = None,
    sig: int = signal.SIGINT,
    again: float | None = None,
) -> Obs:
    """Wait for ``proc`` (killed with its group after ``timeout`` s); ``sig`` is sent once
    ``trigger(elapsed, stdout, stderr)`` holds, and once more ``again`` s later (a second Ctrl-C)."""
    fired = None
    twice = False
    timed_out = False
    while proc.poll() is None:
        elapsed = time.monotonic() - t0
        if trigger is not None and fired is None and trigger(elapsed, "".join(out), "".join(err)):
            proc.send_signal(sig)
            fired = elapsed
        elif again is not None and fired is not None and not twice and elapsed >= fired + again:
            proc.send_signal(sig)
            twice = True
        if elapsed > timeout:
            timed_out = True
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the group of the process this case started
            except ProcessLookupError:
                pass
            proc.wait()
            break
        time.sleep(0.02)
    seconds = time.monotonic() - t0
    for t in threads:
        t.join(timeout=5)
    return Obs(proc.returncode, "".join(out), "".join(err), seconds, timed_out, timeout, fired, sig if fired else None)


def run(
    cmd: Sequence[str],
    cwd: Path,
    env: Dict[str, str],
    timeout: float,
    trigger: Callable[[float, str, str], bool] | None = None,
    sig: int = signal.SIGINT,
    again: float | None = None,
) -> Obs:
    """Start ``cmd`` and wait for it (see ``finish``); the clock starts before the process."""
    t0 = time.monotonic()
    return finish(*start(cmd, cwd, env), t0, timeout, trigger, sig, again)


def together(cmds: Sequence[Sequence[str]], cwd: Path, env: Dict[str, str], timeout: float) -> List[Obs]:
    """Start every command at once and wait for each, all on one clock."""
    t0 = time.monotonic()
    procs = [start(cmd, cwd, env) for cmd in cmds]
    return [finish(*p, t0, timeout) for p in procs]


def after(delay: float) -> Callable[[float, str, str], bool]:
    return lambda t, out, err: t >= delay


def after_records(n: int, fallback: float = 60.0) -> Callable[[float, str, str], bool]:
    """Once ``n`` JSON records were printed (``--json``), or after ``fallback`` seconds."""
    return lambda t, out, err: out.count('{"path"') >= n or t >= fallback


def snapshot(root: Path) -> Dict[str, str]:
    """Every entry under ``root``: a file's SHA-256, 'dir', or a link's target."""
    found: Dict[str, str] = {}
    if not root.exists():
        return found
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            mode = os.lstat(p).st_mode
            if stat.S_ISLNK(mode):
                found[rel] = "link:" + os.readlink(p)
            elif stat.S_ISDIR(mode):
                found[rel] = "dir"
            elif stat.S_ISREG(mode):
                found[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                found[rel] = "special"
    return found


def changes(before: Dict[str, str], now: Dict[str, str]) -> List[str]:
    gone = [k for k in before if k not in now]
    edited = [k for k in before if k in now and before[k] != now[k]]
    return [f"{k} removed" for k in gone] + [f"{k} changed" for k in edited]


def listing(folder: Path) -> List[str]:
    """The sorted names in ``folder`` (none when it is not a folder)."""
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def recorded(folder: Path) -> List[str]:
    """The output names a run recorded in ``folder``'s ``.hmdiff_outputs.json`` (none when it
    is absent or unreadable)."""
    try:
        outputs = json.loads((folder / ".hmdiff_outputs.json").read_text()).get("outputs", {})
    except (OSError, ValueError):
        return []
    return [name for names in outputs.values() for name in names]
