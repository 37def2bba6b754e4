"""Controller load as a cgroup v1 CPU quota: load L leaves the instance (1 - L) of one core.

The paper loaded its controller machines with stress-ng; on one 2-core machine running four
controllers that would load all of them at once, so instead each candidate instance (its controller
process and its own Redis, as the paper's machine held the controller and its local KVS) gets its
own `cpu` cgroup with `cpu.cfs_quota_us = (1 - L) * cpu.cfs_period_us`: the processes (every
thread: `cgroup.procs` moves the whole thread group, and threads created later stay in the group)
may run (1 - L) of each period between them, as if a competing load took the rest of a core. Load
0 means no quota.

Why a 10 ms period. A quota only limits: a process idle before a migration starts it with the whole
period's budget. With the kernel's default 100 ms, a controller at 90 % load may still run 10 ms
unthrottled, about all a ~15 ms migration needs of it, and Fixed toward the 90 % candidate took as
long in the median as toward the 10 % one (15.3 vs 15.2 ms, 15 runs each, `meta_migration.py
--quick --period-us 100000`). At 10 ms, the shortest period at which a 90 % load is still exact
(the kernel refuses quotas under 1 ms), the share holds at the migration's own timescale.

`remove()` moves the processes back to the cgroups they came from and deletes the group; the group
names carry a per-run prefix so nothing else is touched.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 10_000
MIN_QUOTA_US = 1_000  # the kernel refuses quotas under 1 ms


def quota_us(load: float, period_us: int = PERIOD_US) -> int:
    """cfs_quota_us that leaves (1 - load) of one core; -1 (unlimited) for no load."""
    if not 0.0 <= load < 1.0:
        raise ValueError(f"load must be in [0, 1), not {load}")
    if load == 0.0:
        return -1
    quota = int(round((1.0 - load) * period_us))
    if quota < MIN_QUOTA_US:  # the kernel would refuse it; raising it would impose less load
        raise ValueError(f"load {load} needs a quota of {quota} us in a {period_us} us period; "
                         f"the kernel's minimum is {MIN_QUOTA_US} us (use a longer period)")
    return quota


def cpu_cgroup_of(pid: int, proc: Path = Path("/proc")) -> str:
    """The process's path in the cgroup v1 hierarchy that has the `cpu` controller ('/' if none)."""
    for line in (proc / str(pid) / "cgroup").read_text().splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and "cpu" in parts[1].split(","):
            return parts[2] or "/"
    return "/"


class CpuQuota:
    """One controller instance (its process and its own Redis) limited to a share of one core
    through a cpu cgroup of its own: the paper loaded each controller's machine, whose local KVS
    felt the load as well."""

    def __init__(self, name: str, pids: Sequence[int], root: Path = CPU_ROOT,
                 period_us: int = PERIOD_US) -> None:
        if "/" in name or not name:
            raise ValueError(f"bad cgroup name {name!r}")
        if not pids:
            raise ValueError("a quota group needs at least one process")
        self.pids, self.root, self.period_us = tuple(pids), Path(root), period_us
        self.dir = self.root / name
        self.homes = {pid: self.root / cpu_cgroup_of(pid).lstrip("/") for pid in self.pids}
        self.load: Optional[float] = None

    def apply(self, load: float) -> None:
        """Create the group if needed, set the quota, move the processes (all threads) in."""
        quota = quota_us(load, self.period_us)
        self.dir.mkdir(exist_ok=True)
        (self.dir / "cpu.cfs_period_us").write_text(str(self.period_us))
        (self.dir / "cpu.cfs_quota_us").write_text(str(quota))
        for pid in self.pids:
            (self.dir / "cgroup.procs").write_text(str(pid))
        self.load = load

    def set_load(self, load: float) -> None:
        """Change the quota in place (0: lift it for now; the processes stay in the group)."""
        (self.dir / "cpu.cfs_quota_us").write_text(str(quota_us(load, self.period_us)))

    def tasks(self) -> List[int]:
        return [int(t) for t in (self.dir / "tasks").read_text().split()]

    def remove(self, proc: Path = Path("/proc")) -> None:
        """Move the processes back home and delete the group (no-op if it was never made)."""
        if not self.dir.exists():
            return
        home_of = {}
        for pid, home in self.homes.items():
            try:
                home_of.update({int(t): home for t in os.listdir(proc / str(pid) / "task")})
            except OSError:
                continue  # the process ended meanwhile
        first = self.homes[self.pids[0]]
        for tid in self.tasks():
            try:
                (home_of.get(tid, first) / "tasks").write_text(str(tid))
            except OSError:
                continue  # the thread ended meanwhile
        os.rmdir(self.dir)
        self.load = None
