"""What several instances say, as the one switch the apps see. No I/O.

- `Dedupe`: the packet-in streams of all instances become one. The translation never sends a
  packet through two instances' app rules, so a duplicate means a bug or a race in a map change;
  the same bytes on the same logical port from a *different* instance within `window` seconds are
  dropped and counted (two copies from one instance are two packets, and are both kept).
- `Join`: one request from an app (a barrier, a statistics request) fanned out to every
  instance; the app gets one answer, after every instance answered. An instance that fails
  takes the logical switch down with it (LIME sec. 4.2), so its pending requests end unanswered.
- `Counters`: flow and port counters summed across instances and physical copies, plus what
  retired instances and removed copies had counted, so that what an app reads never goes back.
- `PortStates`: a logical port is up only while it is up wherever it is local; each change is
  reported once, whichever instance reported it.
"""
from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Hashable, Iterable, List, Optional, Set, Tuple

DEDUPE_WINDOW_S = 0.05


class Dedupe:
    def __init__(self, window: float = DEDUPE_WINDOW_S) -> None:
        self.window = window
        self.recent: Deque[Tuple[float, Hashable, int]] = deque()
        self.seen: Dict[Hashable, Tuple[int, float]] = {}  # key -> last admitted (instance, time)
        self.dropped = 0

    def admit(self, now: float, pdpid: int, lport: int, data: bytes) -> bool:
        while self.recent and now - self.recent[0][0] > self.window:
            at, key, _ = self.recent.popleft()
            if self.seen.get(key, (None, None))[1] == at:  # no later report of it is kept
                del self.seen[key]
        key = (lport, hashlib.blake2b(data, digest_size=16).digest())
        last = self.seen.get(key)
        if last is not None and last[0] != pdpid:
            self.dropped += 1
            return False
        self.seen[key] = (pdpid, now)
        self.recent.append((now, key, pdpid))
        return True


@dataclass
class _Pending:
    waiting: Set[int]
    parts: Dict[int, List[Any]] = field(default_factory=dict)


class Join:
    """Requests fanned out to instances, keyed by the app's xid on the logical switch."""

    def __init__(self) -> None:
        self.pending: Dict[int, _Pending] = {}

    def start(self, xid: int, instances: Iterable[int]) -> None:
        if xid in self.pending:
            raise ValueError(f"xid {xid:#x} is already waiting for answers")
        waiting = set(instances)
        if not waiting:
            raise ValueError("a request needs at least one instance")
        self.pending[xid] = _Pending(waiting)

    def answer(self, xid: int, pdpid: int, part: Any = None, more: bool = False
               ) -> Optional[Dict[int, List[Any]]]:
        """Record one instance's reply (a multipart one with `more` until its last part); when
        every instance has answered, return every part by instance (the request is done)."""
        p = self.pending.get(xid)
        if p is None or (pdpid not in p.waiting and pdpid not in p.parts):
            return None  # not ours, or a late answer
        if part is not None:
            p.parts.setdefault(pdpid, []).append(part)
        else:
            p.parts.setdefault(pdpid, [])
        if not more:
            p.waiting.discard(pdpid)
        if p.waiting:
            return None
        del self.pending[xid]
        return p.parts

    def instance_lost(self, pdpid: int) -> List[int]:
        """The xids that can no longer be answered (the logical switch is down)."""
        lost = [x for x, p in self.pending.items() if pdpid in p.waiting]
        for x in lost:
            del self.pending[x]
        return lost


Count = Tuple[int, ...]


def _add(a: Count, b: Count) -> Count:
    if not a:
        return b
    return tuple(x + y for x, y in zip(a, b))


class Counters:
    """Monotonic sums per key (a logical rule's serial, a logical port): live readings from the
    instances plus the offset left by copies that are gone."""

    def __init__(self) -> None:
        self.offset: Dict[Hashable, Count] = {}
        self.last: Dict[Hashable, Count] = {}
        self.clamped = 0

    def fold(self, key: Hashable, final: Count) -> None:
        """A physical copy is about to go (retired instance, re-translated rule): keep its count."""
        self.offset[key] = _add(self.offset.get(key, ()), final)

    def total(self, key: Hashable, live: Iterable[Count]) -> Count:
        t: Count = self.offset.get(key, ())
        for c in live:
            t = _add(t, c)
        prev = self.last.get(key)
        if prev is not None and len(prev) == len(t) and any(x < y for x, y in zip(t, prev)):
            # Packets counted by a copy between its last poll and its removal: never show less.
            self.clamped += 1
            t = tuple(max(x, y) for x, y in zip(t, prev))
        if t:
            self.last[key] = t
        return t

    def forget(self, key: Hashable) -> None:
        """The logical rule itself is gone (the app deleted it, or it timed out)."""
        self.offset.pop(key, None)
        self.last.pop(key, None)

    def to_doc(self) -> Dict[str, List[int]]:
        return {repr(k): list(v) for k, v in self.offset.items()}


class PortStates:
    """Logical port up/down from the instances' PORT_STATUS, reported once per change."""

    def __init__(self) -> None:
        self.down: Dict[int, Set[int]] = {}   # logical port -> instances where it is down
        self.reported: Dict[int, bool] = {}   # logical port -> last reported "up"

    def update(self, lport: int, pdpid: int, up: bool) -> Optional[bool]:
        """The new logical state to report, or None if the apps already know it."""
        where = self.down.setdefault(lport, set())
        if up:
            where.discard(pdpid)
        else:
            where.add(pdpid)
        state = not where
        if self.reported.get(lport, True) == state:
            return None
        self.reported[lport] = state
        return state

    def instance_gone(self, pdpid: int) -> List[Tuple[int, bool]]:
        """A retired instance no longer holds a port down."""
        out = []
        for lport in sorted(self.down):
            if pdpid in self.down[lport]:
                new = self.update(lport, pdpid, True)
                if new is not None:
                    out.append((lport, new))
        return out
