"""What every experiment shares, so they all follow one convention.

An experiment accepts `--quick` (same code path, fewer runs, under five minutes) and `--out DIR`
(default `results/`); writes `DIR/<name>.json` with the raw samples and the parameters of every
configuration, and `DIR/<name>.png`; reports progress on stderr; and prints, as the very last line of
stdout, one JSON object with its headline numbers. The helpers here implement exactly that, plus
CPU pinning and summary statistics, so each experiment file keeps only its own logic.

matplotlib is imported only when a plot is drawn: the unit tests import experiments under
environments (real Ryu's Python 3.9 venv) that may not have it.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple

DEFAULT_OUT = "results"


def add_convention_args(parser: argparse.ArgumentParser) -> None:
    """The two flags every experiment takes."""
    parser.add_argument("--quick", action="store_true",
                        help="fewer runs, same code path (finishes in under 5 minutes)")
    parser.add_argument("--out", default=DEFAULT_OUT, type=Path,
                        help=f"directory for <name>.json and <name>.png (default: {DEFAULT_OUT}/)")


def host_info() -> Dict[str, Any]:
    """Enough about the machine to tell two results files apart."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    return {"hostname": platform.node(), "cpus": os.cpu_count(), "cpu_model": model,
            "python": platform.python_version(), "kernel": platform.release(),
            "loadavg_at_start": load}


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Write atomically (temp file, then rename): an interrupted run never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {obj!r}")


def result_document(name: str, quick: bool, configurations: Sequence[Mapping[str, Any]],
                    runs: Sequence[Mapping[str, Any]], summary: Mapping[str, Any],
                    headline: Mapping[str, Any], **extra: Any) -> Dict[str, Any]:
    """The common envelope of `<name>.json`: who, when, where, then the experiment's own data."""
    doc: Dict[str, Any] = {
        "experiment": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "command": [Path(sys.argv[0]).name] + sys.argv[1:],
        "host": host_info(),
        "configurations": list(configurations),
        "runs": list(runs),
        "summary": dict(summary),
        "headline": dict(headline),
    }
    doc.update(extra)
    return doc


def print_headline(values: Mapping[str, Any]) -> None:
    """The experiment's very last line of stdout: one JSON object (flushed, nothing after it)."""
    sys.stdout.flush()
    sys.stdout.write(json.dumps(dict(values), default=_json_default) + "\n")
    sys.stdout.flush()


class Progress:
    """`[name 3/7 0:42] label` lines on stderr, so a long run shows where it is."""

    def __init__(self, name: str, total: int, stream: Any = None) -> None:
        self.name, self.total, self.done = name, total, 0
        self.stream = stream if stream is not None else sys.stderr
        self.started = time.monotonic()

    def _stamp(self) -> str:
        secs = int(time.monotonic() - self.started)
        return f"{secs // 60}:{secs % 60:02d}"

    def start(self, label: str) -> None:
        """Announce the run that begins now (numbered from 1)."""
        self._line(f"{self.done + 1}/{self.total}", label)

    def finish(self, label: str = "") -> None:
        self.done += 1
        if label:
            self._line(f"{self.done}/{self.total} done", label)

    def note(self, text: str) -> None:
        self._line("", text)

    def _line(self, counter: str, text: str) -> None:
        head = " ".join(p for p in (self.name, counter, self._stamp()) if p)
        print(f"[{head}] {text}", file=self.stream, flush=True)


def summarize(samples: Iterable[float]) -> Dict[str, Optional[float]]:
    """Median first (the headline statistic: robust to one disturbed second), then the spread."""
    xs = sorted(float(x) for x in samples)
    if not xs:
        return {"n": 0, "median": None, "mean": None, "stdev": None, "min": None,
                "p10": None, "p90": None, "max": None}
    return {"n": len(xs), "median": statistics.median(xs), "mean": statistics.fmean(xs),
            "stdev": statistics.stdev(xs) if len(xs) > 1 else 0.0, "min": xs[0],
            "p10": percentile(xs, 10), "p90": percentile(xs, 90), "max": xs[-1]}


def percentile(sorted_xs: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on already sorted data."""
    if not sorted_xs:
        raise ValueError("percentile of no samples")
    pos = (len(sorted_xs) - 1) * pct / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def pin_process(pid: int, cpu: int) -> bool:
    """Pin every thread of `pid` to one CPU (a process's affinity is per thread on Linux).

    False (and nothing changed) if the machine has no such CPU.
    """
    if cpu >= (os.cpu_count() or 1):
        return False
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, {cpu})
        except (ProcessLookupError, PermissionError):
            continue  # a thread that just ended
    return True


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> Optional[float]:
    """User+system CPU seconds of a process (all its threads) so far; None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime (fields 14, 15)


def machine_busy_s() -> float:
    """CPU seconds spent busy (not idle or iowait) by all cores since boot."""
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return (sum(parts[:8]) - idle) / _TICK


def process_cpu_ns(pid: int) -> Optional[int]:
    """CPU time (ns) of every live thread of a process: the sum of the first field of each
    /proc/PID/task/TID/schedstat (the top-level /proc/PID/schedstat counts the main thread only).
    Threads that already ended are not counted. None if the process is gone."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    total = 0
    for tid in tids:
        try:
            total += int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # a thread that just ended
    return total


def process_io(pid: int) -> Optional[Dict[str, int]]:
    """rchar/wchar of a process (all its threads, ended ones included): bytes passed through
    read()/write()-family system calls. Not a network counter: socket send()/recv() calls (all
    that Python's socket module makes) do not count here. None if the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    except OSError:
        return None
    fields = dict(ln.split(": ", 1) for ln in lines if ": " in ln)
    return {"rchar": int(fields["rchar"]), "wchar": int(fields["wchar"])}


class CpuSampler:
    """CPU use of given processes, and of everything else, over a window (start(), then stop()).

    Tells a measurement limited by the process under test (its core near 100 %) from one limited
    elsewhere, and flags foreign load (another job on the machine) that would skew it.
    """

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._t0 = 0.0
        self._proc0: Dict[str, Optional[float]] = {}
        self._busy0 = 0.0

    def start(self) -> None:
        self._t0 = time.monotonic()
        self._busy0 = machine_busy_s()
        self._proc0 = {name: process_cpu_s(pid) for name, pid in self.pids.items()}

    def stop(self) -> Dict[str, Any]:
        """Fractions of one core, per named process, plus `other` (the rest of the machine)."""
        wall = max(time.monotonic() - self._t0, 1e-9)
        busy = machine_busy_s() - self._busy0
        out: Dict[str, Any] = {"wall_s": round(wall, 3)}
        ours = 0.0
        for name, pid in self.pids.items():
            now, before = process_cpu_s(pid), self._proc0.get(name)
            if now is None or before is None:
                out[name] = None
                continue
            ours += now - before
            out[name] = round((now - before) / wall, 3)
        out["other"] = round(max(busy - ours, 0.0) / wall, 3)
        return out


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or None (said on stderr) if it is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed", file=sys.stderr)
        return None
    return plt


def _save(plt: Any, fig: Any, path: Path, title: str) -> Path:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_samples(path: Path, groups: Mapping[str, Sequence[float]], *, ylabel: str, title: str,
                 reference: Optional[Mapping[str, float]] = None) -> Optional[Path]:
    """One box plot panel: see `plot_panels`."""
    return plot_panels(path, [("", groups, reference or {})], ylabel=ylabel, title=title)


Panel = Tuple[str, Mapping[str, Sequence[float]], Mapping[str, float]]


def plot_panels(path: Path, panels: Sequence[Panel], *, ylabel: str, title: str,
                widths: Optional[Sequence[float]] = None) -> Optional[Path]:
    """Side-by-side panels (title, groups, reference lines), each with its own y scale so a
    group orders of magnitude apart (e.g. a generator ceiling) does not flatten the others.

    Each group is a box with every raw sample drawn over it (a box alone hides how few samples
    there are); `reference` draws labelled horizontal lines (e.g. a published baseline). Returns
    None if matplotlib is missing, so a run without it still writes its JSON.
    """
    plt = _pyplot()
    if plt is None:
        return None
    panels = [p for p in panels if any(p[1].values())] or list(panels[:1])
    counts = [max(1, sum(1 for xs in p[1].values() if xs)) for p in panels]
    ratios = list(widths) if widths else counts
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.5, 2.0 * sum(counts) + 1.5), 4.8),
                             gridspec_kw={"width_ratios": ratios}, squeeze=False)
    for ax, (sub, groups, reference) in zip(axes[0], panels):
        _box_panel(ax, groups, reference)
        if sub:
            ax.set_title(sub, fontsize=9)
    axes[0][0].set_ylabel(ylabel)
    return _save(plt, fig, path, title)


def _box_panel(ax: Any, groups: Mapping[str, Sequence[float]],
               reference: Mapping[str, float]) -> None:
    names = [n for n, xs in groups.items() if xs]
    if names:
        data = [list(groups[n]) for n in names]
        ax.boxplot(data, showfliers=False, widths=0.5)
        ax.set_xticks(range(1, len(names) + 1))
        ax.set_xticklabels(names, fontsize=8)
        for i, xs in enumerate(data, start=1):
            # deterministic spread, so the picture is reproducible
            offsets = [((k * 0.618034) % 1.0 - 0.5) * 0.3 for k in range(len(xs))]
            ax.scatter([i + o for o in offsets], xs, s=10, alpha=0.6, zorder=3)
            ax.annotate(f"median {statistics.median(xs):,.0f}", (i, max(xs)), xytext=(0, 6),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8)
    for k, (label, value) in enumerate(sorted(reference.items(), key=lambda kv: kv[1])):
        ax.axhline(value, linestyle="--", linewidth=0.8, color="grey")
        ax.annotate(label, (1.0, value), xycoords=("axes fraction", "data"),
                    xytext=(-3, 2 if k % 2 else -2), textcoords="offset points", ha="right",
                    va="bottom" if k % 2 else "top", fontsize=7, color="grey")
    ax.set_ylim(bottom=0, top=max([max(groups[n]) for n in names] + list(reference.values())
                                  + [1.0]) * 1.12)
    ax.grid(axis="y", alpha=0.3)
    ax.yaxis.set_major_formatter(_thousands)


def _thousands(value: float, _pos: Any = None) -> str:
    return f"{value:,.0f}"


CdfPanel = Tuple[str, Mapping[str, Sequence[float]], str]

#: Percentiles marked on each CDF line, as in the Meta-Migration paper's figures.
CDF_MARKS = (10, 20, 30, 40, 50, 60, 70, 80, 90, 99)


def plot_cdf_panels(path: Path, panels: Sequence[CdfPanel], *, title: str, ncols: int = 3,
                    marks: Sequence[float] = CDF_MARKS) -> Optional[Path]:
    """A grid of CDF panels (title, {label: samples}, x label), one line per label, with a
    marker at each of `marks` percentiles. None if matplotlib is missing (the JSON still counts).
    """
    plt = _pyplot()
    if plt is None:
        return None
    panels = [p for p in panels if any(p[1].values())] or list(panels[:1])
    ncols = max(1, min(ncols, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (sub, groups, xlabel) in zip(axes.flat, panels):
        for label, samples in groups.items():
            xs = sorted(float(x) for x in samples)
            if not xs:
                continue
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            (line,) = ax.step(xs, ys, where="post", linewidth=1.2, label=f"{label} (n={len(xs)})")
            ax.plot([percentile(xs, m) for m in marks], [m / 100.0 for m in marks], "o",
                    markersize=3, color=line.get_color())
        ax.set_title(sub, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("CDF", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right")
    return _save(plt, fig, path, title)
