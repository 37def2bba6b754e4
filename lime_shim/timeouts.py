"""Idle and hard timeouts kept by the shim while a switch has several instances. No I/O.

Two instances must not expire a rule on their own: one would delete it while the other keeps it
(LIME sec. 4.1). So while migrating, physical rules carry no timeouts and the shim keeps the
app's: a rule is idle when its summed packet count has not moved for `idle` seconds, as seen by
polls of the instances' flow counters; it is deleted from every instance and, if the app asked for
it, the app gets the FLOW_REMOVED it would have had. An idle expiry can come up to one poll
interval late, never early: a rule is only called idle after a poll showed no change for
the whole idle time.

| rule state | event                                   | result                                  |
|------------|-----------------------------------------|-----------------------------------------|
| live       | poll(now, count), count changed (or a    | last_active := now                      |
|            |   first reading above 0)                 |                                         |
| live       | poll(now, ...), hard > 0, now-added >= hard | expire HARD                          |
| live       | poll(now, count unchanged), idle > 0,    | expire IDLE                             |
|            |   now - last_active >= idle              |                                         |
| live       | app deletes or replaces it               | forgotten (no FLOW_REMOVED from here)   |
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

IDLE, HARD = 0, 1  # OFPRR_IDLE_TIMEOUT, OFPRR_HARD_TIMEOUT


@dataclass
class _Timed:
    idle: int
    hard: int
    added: float
    last_active: float
    count: Optional[int] = None


class Timeouts:
    def __init__(self) -> None:
        self.rules: Dict[int, _Timed] = {}

    def add(self, serial: int, idle: int, hard: int, now: float) -> None:
        if idle < 0 or hard < 0:
            raise ValueError("timeouts cannot be negative")
        if idle or hard:
            self.rules[serial] = _Timed(idle, hard, now, now)
        else:
            self.rules.pop(serial, None)

    def forget(self, serial: int) -> None:
        self.rules.pop(serial, None)

    def poll(self, now: float, counts: Dict[int, int]) -> List[Tuple[int, int]]:
        """Summed packet counts of the timed rules at `now`; returns (serial, reason) expired."""
        out: List[Tuple[int, int]] = []
        for serial, t in list(self.rules.items()):
            c = counts.get(serial)
            if c is not None and c != t.count:
                if t.count is not None or c > 0:  # a first reading above 0: active since added
                    t.last_active = now
                t.count = c
            if t.hard and now - t.added >= t.hard:
                out.append((serial, HARD))
            elif t.idle and c is not None and now - t.last_active >= t.idle:
                out.append((serial, IDLE))
            else:
                continue
            del self.rules[serial]
        return out
