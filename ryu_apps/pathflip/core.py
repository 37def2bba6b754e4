"""The VNM paper's control application: two hosts' traffic takes the upper path, then the lower,
flipping every period, for the whole run. No I/O and no clock: the caller says when it is (`now`,
monotonic seconds) and sends the rules it is given.

Four switches: A (first host's edge), U (upper middle), L (lower middle), B (second host's edge).
The middle switches join their ports 1 and 2. The edge switches send what comes from either
middle switch to their host, and what comes from their host to the current path's middle switch:
that last rule, on A and on B, is the only one a flip changes. Every rule matches only in_port,
so ARP needs no controller and nothing is ever flooded (the topology has a loop).

| state   | input                        | rules out                            | next              |
|---------|------------------------------|--------------------------------------|-------------------|
| any     | switch_up(d), d not of the 4 | none                                 | same              |
| any     | switch_up(d), d one of the 4 | d's static rules (+ path rule: A, B) | ready if all 4 up |
|         |                              |                                      | (and not armed)   |
| any     | switch_down(d), d known      | none                                 | waiting (unarmed) |
| waiting | tick(now)                    | none                                 | waiting           |
| ready   | tick(now)                    | none                                 | armed: due=now+P  |
| armed   | tick(now < due)              | none                                 | armed             |
| armed   | tick(now >= due)             | path rule on A and B, other path     | armed: due = the  |
|         |                              |                                      | first due+k*P>now |

The schedule stays on its grid (due, due+P, due+2P...: no drift from a late loop), and a loop
late by several periods flips once, not once per missed period. The path survives a switch
going away: one that comes back gets the current path, and flipping starts again one period
after the first tick that sees all four back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Set

if TYPE_CHECKING:  # only its shape: importing ryu_apps.config loads the platform
    from ryu_apps.config import PathflipConfig

UPPER, LOWER = "upper", "lower"
MIDDLE_PORTS = (1, 2)  # the middle switches' ports towards A and towards B


@dataclass(frozen=True)
class Rule:
    """On switch dpid, send what comes in on in_port out of out_port."""

    dpid: int
    in_port: int
    out_port: int


class PathFlip:
    def __init__(self, cfg: PathflipConfig) -> None:
        self.cfg = cfg
        a, u, lo, b = cfg.switches
        self.edges, self.middles = (a, b), (u, lo)
        self.path = UPPER
        self.flips = 0
        self.due: Optional[float] = None  # the next flip's time, once armed
        self.known: Set[int] = set()

    @property
    def ready(self) -> bool:
        return len(self.known) == 4

    def switch_up(self, dpid: int) -> List[Rule]:
        """Every rule switch dpid should hold now (again, if it was up already)."""
        if dpid not in self.cfg.switches:
            return []
        self.known.add(dpid)
        if dpid in self.middles:
            p, q = MIDDLE_PORTS
            return [Rule(dpid, p, q), Rule(dpid, q, p)]
        c = self.cfg
        return [Rule(dpid, c.up, c.host), Rule(dpid, c.down, c.host), self._path_rule(dpid)]

    def switch_down(self, dpid: int) -> None:
        if dpid in self.known:
            self.known.discard(dpid)
            self.due = None

    def tick(self, now: float) -> List[Rule]:
        """The path rules of A and B if a flip is due (the path is then flipped), else none."""
        if not self.ready:
            return []
        period = self.cfg.period_s
        if self.due is None:
            self.due = now + period
            return []
        if now < self.due:
            return []
        self.due += period * (math.floor((now - self.due) / period) + 1)
        self.path = LOWER if self.path == UPPER else UPPER
        self.flips += 1
        return [self._path_rule(d) for d in self.edges]

    def _path_rule(self, dpid: int) -> Rule:
        c = self.cfg
        return Rule(dpid, c.host, c.up if self.path == UPPER else c.down)
