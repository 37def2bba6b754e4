"""Controller load as a cgroup v1 CPU quota: load L leaves the process (1 - L) of one core.

The paper loaded its controller machines with stress-ng; on one 2-core machine running four
controllers that would load all of them at once, so instead each candidate controller process gets
its own `cpu` cgroup with `cpu.cfs_quota_us = (1 - L) * cpu.cfs_period_us` (period 100 ms): the
process (every thread: `cgroup.procs` moves the whole thread group, and threads created later stay
in the group) may run (1 - L) of each period, exactly as if a competing load took the rest of a
core. Load 0 means no quota. `remove()` moves the process back to the cgroup it came from and
deletes the group; the group names carry a per-run prefix so nothing else is touched.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000
MIN_QUOTA_US = 1_000  # the kernel refuses quotas under 1 ms


def quota_us(load: float, period_us: int = PERIOD_US) -> int:
    """cfs_quota_us that leaves (1 - load) of one core; -1 (unlimited) for no load."""
    if not 0.0 <= load < 1.0:
        raise ValueError(f"load must be in [0, 1), not {load}")
    if load == 0.0:
        return -1
    return max(MIN_QUOTA_US, int(round((1.0 - load) * period_us)))


def cpu_cgroup_of(pid: int, proc: Path = Path("/proc")) -> str:
    """The process's path in the cgroup v1 hierarchy that has the `cpu` controller ('/' if none)."""
    for line in (proc / str(pid) / "cgroup").read_text().splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and "cpu" in parts[1].split(","):
            return parts[2] or "/"
    return "/"


class CpuQuota:
    """One process limited to a share of a core through its own cpu cgroup."""

    def __init__(self, name: str, pid: int, root: Path = CPU_ROOT, period_us: int = PERIOD_US) -> None:
        if "/" in name or not name:
            raise ValueError(f"bad cgroup name {name!r}")
        self.pid, self.root, self.period_us = pid, Path(root), period_us
        self.dir = self.root / name
        self.home = self.root / cpu_cgroup_of(pid).lstrip("/")
        self.load: Optional[float] = None

    def apply(self, load: float) -> None:
        """Create the group if needed, set the quota, move the process (all threads) in."""
        quota = quota_us(load, self.period_us)
        self.dir.mkdir(exist_ok=True)
        (self.dir / "cpu.cfs_period_us").write_text(str(self.period_us))
        (self.dir / "cpu.cfs_quota_us").write_text(str(quota))
        (self.dir / "cgroup.procs").write_text(str(self.pid))
        self.load = load

    def set_load(self, load: float) -> None:
        """Change the quota in place (0: lift it for now; the process stays in the group)."""
        (self.dir / "cpu.cfs_quota_us").write_text(str(quota_us(load, self.period_us)))

    def tasks(self) -> List[int]:
        return [int(t) for t in (self.dir / "tasks").read_text().split()]

    def remove(self) -> None:
        """Move the process back home and delete the group (no-op if it was never made)."""
        if not self.dir.exists():
            return
        for tid in self.tasks():
            try:
                (self.home / "tasks").write_text(str(tid))
            except OSError:
                continue  # the thread ended meanwhile
        os.rmdir(self.dir)
        self.load = None
