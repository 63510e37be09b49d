"""How a soak (``hmdiff bench-node --faults``) is judged and reported.

:class:`SoakResult` holds what a soak recorded; :meth:`SoakResult.judge` judges each result (its
stamp must be one an image had, and its keypoints_2d its joints projected with the intrinsics
the node should have used for that image), and :meth:`SoakResult.figures` sums them per phase
with the verdict: a correct result within :data:`~hmdiff_ros.ros.faults.RECOVERY_S` of each
fault's end, the node alive and exiting 0 on SIGINT, no result that is not of its stamp's
frame, memory flat after the warm-up. :func:`format_soak` prints the figures as a table,
:func:`soak_markdown` writes them as the Markdown report beside the JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np

from hmdiff_ros.ros import health
from hmdiff_ros.ros.faults import CYCLE_S, RECOVERY_S, SOAK_DIAGNOSTICS_S, SOAK_RSS_GROWTH_MIB
from hmdiff_ros.ros.load import COUNTERS


@dataclass
class SoakResult:
    """What a soak recorded; :meth:`figures` judges it. Times are wall-clock seconds, stamps
    integer nanoseconds (the images' header stamps)."""

    source: str
    fps: float
    cycles: int
    intrinsics: Dict[str, tuple]  # soak_intrinsics()
    rss_limit_mib: float = SOAK_RSS_GROWTH_MIB
    warmup_cycles: int = 1
    phases: List[dict] = field(default_factory=list)  # per phase run: name, cycle, start, end, events, published
    published: Dict[int, tuple] = field(default_factory=dict)  # stamp -> (phase run, K key the node should use)
    results: List[tuple] = field(default_factory=list)  # (arrival, stamp, people, (fx, fy, cx, cy) | None, box centre)
    diagnostics: List[tuple] = field(default_factory=list)  # (arrival, level, message, counters)
    memory: List[tuple] = field(default_factory=list)  # (time, RSS MiB)
    node: Dict[str, int] = field(default_factory=dict)  # the node's counters over the whole run
    exit_code: int | None = None
    crashed: str = ""  # the node exited during the run: when and its last output

    def judge(self) -> List[tuple]:
        """Per result ``(arrival, stamp, run, verdict)``: ``correct``, or why not; a verdict
        starting with ``violation`` is a result that is not of the frame its stamp names."""
        keys = self.intrinsics
        out = []
        for arrival, stamp, people, K, centre in self.results:
            if stamp not in self.published:
                out.append((arrival, stamp, -1, "violation: a stamp that was not published"))
                continue
            run, expected = self.published[stamp]
            w, h = keys[expected][:2]
            near = [name for name, k in keys.items() if K is not None and _same_k(K, k[2:])]
            if not people:
                why = "no person"
            elif not any(keys[name][:2] == (w, h) for name in near):
                why = "violation: intrinsics of another image size"  # the result is not of this frame
            elif expected not in near:
                why = f"stale intrinsics ({'/'.join(near)} for {expected})"
            elif not (0 <= centre[0] <= w and 0 <= centre[1] <= h):
                why = "box outside the image"
            else:
                why = "correct"
            out.append((arrival, stamp, run, why))
        return out

    def figures(self) -> Dict:
        judged = self.judge()
        by_run: Dict[int, list] = {}
        for item in judged:
            by_run.setdefault(item[2], []).append(item)
        correct = sorted((stamp, arrival) for arrival, stamp, _, why in judged if why == "correct")
        stamps = np.array([s for s, _ in correct], dtype=np.int64)
        arrivals = np.array([a for _, a in correct])
        rows: Dict[str, dict] = {}
        for i, run in enumerate(self.phases):
            row = rows.setdefault(run["name"], _empty_row(run))
            row["runs"] += 1
            row["seconds"] += run["end"] - run["start"]
            row["published"] += run["published"]
            before, after = self._counters_at(run["start"]), self._counters_at(run["end"])
            for k in COUNTERS:
                row[k] += int(after.get(k, 0)) - int(before.get(k, 0))
            for *_, why in by_run.get(i, []):
                row["results"] += 1
                if why == "correct":
                    row["correct"] += 1
                else:
                    row["not_correct"][why] = row["not_correct"].get(why, 0) + 1
                    row["violations"] += why.startswith("violation")
            row["_ages"] += [a - s * 1e-9 for a, s, _, _ in by_run.get(i, [])]
            level, message = self._worst_level(run["start"], run["end"])
            if level > row["_level"][0]:
                row["_level"] = (level, message)
            row["_rss"] += [m for t, m in self.memory if run["start"] <= t < run["end"]]
            for event in run["events"]:  # the first correct result of a frame stamped after it
                j = int(np.searchsorted(stamps, int(event * 1e9)))
                later = arrivals[j:]
                took = float(later.min() - event) if len(later) else None
                row["_recovery"].append((took, run["cycle"]))
        phases = [_finish_row(row) for row in rows.values()]
        unpublished = sum(1 for *_, why in judged if why == "violation: a stamp that was not published")
        memory = self._memory()
        recoveries = [(r["phase"], r["recovery_max_s"], r["recovery_missing"]) for r in phases if r["events"]]
        checks = {
            "recovered": all(m == 0 and t is not None and t <= RECOVERY_S for _, t, m in recoveries),
            "alive": not self.crashed,
            "exit_code_0": self.exit_code == 0,
            "stamps": all(r["violations"] == 0 for r in phases) and unpublished == 0,
            "memory_flat": memory["rss_growth_mib"] is not None and memory["rss_growth_mib"] <= self.rss_limit_mib,
        }
        failures = [
            f"{name}: {'no correct result after ' + str(m) + ' fault end(s)' if m else f'recovered in {t} s'}"
            for name, t, m in recoveries
            if m or t is None or t > RECOVERY_S
        ]
        failures += [f"the node exited during the run: {self.crashed}"] if self.crashed else []
        failures += [f"exit code {self.exit_code} on SIGINT"] if self.exit_code != 0 else []
        failures += [
            f"{r['phase']}: {r['violations']} results not of their stamp's frame" for r in phases if r["violations"]
        ]
        failures += [f"{unpublished} results with a stamp that was not published"] if unpublished else []
        if not checks["memory_flat"]:
            failures.append(
                f"memory grew {memory['rss_growth_mib']} MiB after the warm-up (at most {self.rss_limit_mib:g})"
            )
        return {
            "source": self.source,
            "fps": self.fps,
            "minutes": round(sum(r["end"] - r["start"] for r in self.phases) / 60.0, 2),
            "cycles": self.cycles,
            "cycle_s": CYCLE_S,
            "phases": phases,
            "node": {k: self.node.get(k) for k in COUNTERS} | {"exit_code": self.exit_code},
            "results": len(judged),
            "unpublished_stamps": unpublished,
            "memory": memory,
            "crashed": self.crashed,
            "verdict": {
                "passed": all(checks.values()),
                "checks": checks,
                "criteria": {
                    "recovery_s": RECOVERY_S,
                    "rss_growth_limit_mib": self.rss_limit_mib,
                    "rss_growth_after_cycles": self.warmup_cycles,
                },
                "failures": failures,
            },
        }

    def _counters_at(self, t: float) -> Dict[str, str]:
        """The node's counters in its last diagnostics update before ``t`` (its first if none)."""
        last = self.diagnostics[0][3] if self.diagnostics else {}
        for arrival, _, _, counters in self.diagnostics:
            if arrival > t:
                break
            last = counters
        return last

    def _worst_level(self, start: float, end: float) -> tuple:
        worst = (-1, "")
        for arrival, level, message, _ in self.diagnostics:
            if start < arrival <= end + SOAK_DIAGNOSTICS_S and level > worst[0]:
                worst = (level, message)
        return worst

    def _memory(self) -> Dict:
        """RSS over the run. Growth: the highest RSS of the last ``warmup_cycles`` cycles less
        the highest of the first ``warmup_cycles`` (the warm-up). RSS steps between a low and a
        high level within a cycle (the 1280x720 frames' buffers, handed back to the system at
        times), so a median depends on when; the highest of as many cycles at each end is
        the same phases' plateau, and a leak raises it."""
        per_cycle: Dict[int, float] = {}
        for run in self.phases:
            rss = [m for t, m in self.memory if run["start"] <= t < run["end"]]
            if rss:
                per_cycle[run["cycle"]] = max(per_cycle.get(run["cycle"], 0.0), max(rss))
        k, cycles = self.warmup_cycles, sorted(per_cycle)
        done = len(cycles) >= 2 * k
        ref = max(per_cycle[c] for c in cycles[:k]) if done else None
        last = max(per_cycle[c] for c in cycles[-k:]) if done else None
        t0 = self.memory[0][0] if self.memory else 0.0

        def highest_per(seconds: float) -> List[float]:
            bins: Dict[int, float] = {}
            for t, m in self.memory:
                bins[int((t - t0) // seconds)] = max(bins.get(int((t - t0) // seconds), 0.0), m)
            return [round(bins[b], 1) for b in sorted(bins)]

        return {
            "rss_start_mib": round(self.memory[0][1], 1) if self.memory else None,
            "rss_end_mib": round(self.memory[-1][1], 1) if self.memory else None,
            "rss_warmup_max_mib": round(ref, 1) if done else None,
            "rss_last_max_mib": round(last, 1) if done else None,
            "rss_growth_mib": round(last - ref, 1) if done else None,
            "rss_max_per_minute_mib": highest_per(60.0),
            "rss_max_per_10s_mib": highest_per(10.0),
        }


def _same_k(fit: tuple, k: tuple, tol: float = 1.0) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(fit, k, strict=True))


def _empty_row(run: dict) -> dict:
    return {
        "phase": run["name"],
        "what": run["what"],
        "runs": 0,
        "seconds": 0.0,
        "published": 0,
        **{k: 0 for k in COUNTERS},
        "results": 0,
        "correct": 0,
        "not_correct": {},
        "violations": 0,
        "_ages": [],
        "_rss": [],
        "_level": (-1, ""),
        "_recovery": [],
    }


def _finish_row(row: dict) -> dict:
    ages, rss = np.array(row.pop("_ages")) * 1000.0, row.pop("_rss")
    level, message = row.pop("_level")
    recovery = row.pop("_recovery")
    took = [t for t, _ in recovery if t is not None]
    pct = lambda a, q: round(float(np.percentile(a, q)), 1) if len(a) else None  # noqa: E731
    worst = max(recovery, key=lambda r: float("inf") if r[0] is None else r[0]) if recovery else None
    return {
        **row,
        "seconds": round(row["seconds"], 1),
        "latency_p50_ms": pct(ages, 50),
        "latency_p99_ms": pct(ages, 99),
        "events": len(recovery),
        "recovery_p50_s": round(float(np.median(took)), 3) if took else None,
        "recovery_max_s": round(max(took), 3) if took else None,
        "recovery_missing": len(recovery) - len(took),
        "recovery_worst_cycle": worst[1] if worst else None,
        "rss_max_mib": round(max(rss), 1) if rss else None,
        "diagnostics": health.LEVEL_NAMES[level] if 0 <= level < len(health.LEVEL_NAMES) else "none",
        "diagnostics_message": message if level > 0 else "",
    }


def format_soak(fig: Dict) -> str:
    """The soak's figures as a table, one row per phase (all its runs), and the verdict."""
    v, m, node = fig["verdict"], fig["memory"], fig["node"]
    lines = [
        f"node under faults: {fig['source']} at {fig['fps']:g} FPS, {fig['cycles']} cycles of {fig['cycle_s']:g} s "
        f"({fig['minutes']} min)",
        f"  {'phase':<18}{'runs':>5}{'published':>10}{'received':>9}{'processed':>10}{'dropped':>8}{'failed':>7}"
        f"{'correct':>8}{'p50 ms':>8}{'p99 ms':>8}{'recovery':>10}{'RSS MiB':>9}  diagnostics",
    ]
    for r in fig["phases"]:
        recovery = "-" if not r["events"] else f"{r['recovery_max_s']}s" + (" !" if r["recovery_missing"] else "")
        lines.append(
            f"  {r['phase']:<18}{r['runs']:>5}{r['published']:>10}{r['received']:>9}{r['processed']:>10}"
            f"{r['dropped']:>8}{r['failed']:>7}{r['correct']:>8}{_text(r['latency_p50_ms']):>8}"
            f"{_text(r['latency_p99_ms']):>8}{recovery:>10}{_text(r['rss_max_mib']):>9}  {r['diagnostics']}"
            + (f" ({r['diagnostics_message']})" if r["diagnostics_message"] else "")
        )
        for why, n in r["not_correct"].items():
            lines.append(f"      not correct: {why} ({n})")
    lines += [
        f"  node: {', '.join(f'{k} {node[k]}' for k in COUNTERS)}; results {fig['results']}, with a stamp "
        f"not published {fig['unpublished_stamps']}; exit code {fig['node']['exit_code']}",
        f"  memory (RSS) {m['rss_start_mib']} -> {m['rss_end_mib']} MiB; highest in the warm-up "
        f"{m['rss_warmup_max_mib']}, in as many cycles at the end {m['rss_last_max_mib']}: growth {m['rss_growth_mib']} MiB",
        f"  verdict: {'PASS' if v['passed'] else 'FAIL'} (recovery within {v['criteria']['recovery_s']:g} s, alive, "
        f"exit code 0, every result of its stamp's frame, growth <= {v['criteria']['rss_growth_limit_mib']:g} MiB)",
    ]
    lines += [f"    {text}" for text in v["failures"]]
    return "\n".join(lines)


def soak_markdown(fig: Dict, command: str = "") -> str:
    """The soak's figures as a short Markdown report (beside the JSON in docs/bench/)."""
    v, m = fig["verdict"], fig["memory"]
    lines = [
        f"# The node under faults: {fig['minutes']} minutes",
        "",
        f"`{command}`" if command else "",
        "",
        f"{fig['source']} at {fig['fps']:g} FPS, {fig['cycles']} cycles of {fig['cycle_s']:g} s; each cycle runs the "
        "phases below in this order (normal phases between the faults). Counts are the node's own "
        f"(`/diagnostics`, every {SOAK_DIAGNOSTICS_S:g} s); latency is the image stamp to the HumanArray's arrival; "
        f"recovery is a fault's end to the first correct result of a later frame (at most {RECOVERY_S:g} s).",
        "",
        "| phase | what happens | runs | published | received | processed | dropped | failed | correct "
        "| latency p50 / p99 (ms) | recovery max (s) | RSS max (MiB) | diagnostics |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in fig["phases"]:
        recovery = "" if not r["events"] else f"{r['recovery_max_s']}" + (" (missing)" if r["recovery_missing"] else "")
        lines.append(
            f"| {r['phase']} | {r['what']} | {r['runs']} | {r['published']} | {r['received']} | {r['processed']} "
            f"| {r['dropped']} | {r['failed']} | {r['correct']} of {r['results']} | {_text(r['latency_p50_ms'])} / "
            f"{_text(r['latency_p99_ms'])} | {recovery} | {_text(r['rss_max_mib'])} | {r['diagnostics']} |"
        )
    lines += [
        "",
        f"Memory (RSS): {m['rss_start_mib']} -> {m['rss_end_mib']} MiB; highest per minute "
        f"{', '.join(f'{x:g}' for x in m['rss_max_per_minute_mib'])}; growth after the warm-up "
        f"(the highest of the last {v['criteria']['rss_growth_after_cycles']} cycles less the highest of the first "
        f"{v['criteria']['rss_growth_after_cycles']}) {m['rss_growth_mib']} MiB "
        f"(at most {v['criteria']['rss_growth_limit_mib']:g}). Exit code on SIGINT: {fig['node']['exit_code']}. "
        f"Results with a stamp that was not published: {fig['unpublished_stamps']}.",
        "",
        f"**Verdict: {'pass' if v['passed'] else 'FAIL'}** ({', '.join(k for k, ok in v['checks'].items() if ok)} "
        f"held{'; failed: ' + '; '.join(v['failures']) if v['failures'] else ''}).",
        "",
    ]
    return "\n".join(lines)


def _text(value) -> str:
    return "-" if value is None else f"{value:g}"
