"""Statistics of a logical switch from its instances' replies (LIME sec. 4.2). No I/O.

An app asks one switch; the shim asks every instance and folds the answers into the logical view:

| statistic | physical rows                         | logical row                                      |
|-----------|---------------------------------------|--------------------------------------------------|
| flow      | every copy of every app rule, on every| per app rule (by the serial in the copy's cookie):|
|           | instance (shim cookies only)          | summed, plus offsets (`Counters`); the app's own  |
|           |                                       | match, priority, cookie, actions; filtered as    |
|           |                                       | OpenFlow filters a request, by the app's rule     |
| port      | each instance's ports                 | per logical port, summed where it is *local*     |
|           |                                       | (tunnel ports and foreign ports are not the app's)|
| table     | each instance's tables                | lookups and matches summed; active = app rules   |

Offsets keep what an app reads from going back: the final counts of a copy that is deleted
(FLOW_REMOVED with its counts) and of an instance that leaves (its last poll) are folded in; an
instance that joins has its counts at that moment folded in negatively (a spare's ports counted
before they were the switch's). Offsets are saved as JSON: ports and tables by number, rules by
their key (table, priority, match), since serials do not outlive the shim.

Not filtered (answered as if the filter passed): out_group other than ANY matches no rule (the
shim does not translate groups). Table lookups of a tunnelled packet are counted on both ends.
"""
from __future__ import annotations

import json
import math
from typing import Dict, Hashable, Iterable, List, Tuple

from lime_shim.mapping import Instance
from lime_shim.merge import Count, Counters
from lime_shim.model import OFPP_ANY, Match, Rule, match_get
from lime_shim.table import OFPG_ANY, OFPTT_ALL, Entry, covers
from lime_shim.timeouts import Timeouts
from lime_shim.translate import serial_of

#: (packets, bytes) of one physical copy, with the cookie that names its rule.
CopyRow = Tuple[int, int, int]      # cookie, packets, bytes
Row = Tuple[int, Count]             # port or table number, counts


def live_by(rows: Dict[int, List[Row]]) -> Dict[int, List[Count]]:
    """Rows of several instances, keyed by port or table number: the live readings of each key."""
    out: Dict[int, List[Count]] = {}
    for per in rows.values():
        for key, count in per:
            out.setdefault(key, []).append(count)
    return out


def flow_live(rows: Dict[int, List[CopyRow]]) -> Dict[int, List[Count]]:
    """Copies of the instances by rule serial (the shim's tunnel rules and others are left out)."""
    return live_by({d: [(s, (p, b)) for c, p, b in per if (s := serial_of(c)) is not None]
                    for d, per in rows.items()})


def port_live(instances: Dict[int, Instance], rows: Dict[int, List[Row]]) -> Dict[int, List[Count]]:
    """Physical port rows as logical ports: a row counts where its port is the logical port's
    local port on that instance (a tunnel or a neighbour's link to a spare is nobody's port)."""
    logical: Dict[int, List[Row]] = {}
    for pdpid, per in rows.items():
        inst = instances.get(pdpid)
        if inst is None:
            continue
        local = {inst.local(lp): lp for lp in inst.out}
        logical[pdpid] = [(local[p], c) for p, c in per if p in local and p is not None]
    return live_by(logical)


def selects(rule: Rule, table_id: int, out_port: int, out_group: int, cookie: int,
            cookie_mask: int, match: Match) -> bool:
    """Does a flow statistics request (non-strict, as OpenFlow's) select this app rule?"""
    if table_id != OFPTT_ALL and rule.table_id != table_id:
        return False
    if cookie_mask and (rule.cookie ^ cookie) & cookie_mask:
        return False
    if out_port != OFPP_ANY and out_port not in rule.outputs():
        return False
    if out_group != OFPG_ANY:
        return False
    return covers(match, rule.match)


def same_copy(rule: Rule, table_id: int, priority: int, match: Match) -> bool:
    """Is a removed physical copy (its table, priority, match) a copy of this app rule? Its
    in_port is the instance's; anything else must be the rule's own (a serial left by an earlier
    run of the shim may name another rule now)."""
    if (table_id, priority) != (rule.table_id, rule.priority):
        return False
    strip = lambda m: tuple(kv for kv in m if kv[0] != "in_port")  # noqa: E731
    return strip(match) == strip(rule.match) and (
        match_get(rule.match, "in_port") is None or match_get(match, "in_port") is not None)


def track(timeouts: Timeouts, entries: Iterable[Entry]) -> None:
    """Keep the emulated timeouts to the app's table: rules with a timeout are timed from when
    they were added (an ADD that replaced one restarts it); rules gone are forgotten."""
    seen = set()
    for e in entries:
        r = e.rule
        if not (r.idle_timeout or r.hard_timeout):
            continue
        seen.add(e.serial)
        t = timeouts.rules.get(e.serial)
        if t is None or t.added != e.added or (t.idle, t.hard) != (r.idle_timeout, r.hard_timeout):
            timeouts.add(e.serial, r.idle_timeout, r.hard_timeout, e.added)
    for serial in [s for s in timeouts.rules if s not in seen]:
        timeouts.forget(serial)


def hard_left(hard: int, added: float, now: float) -> int:
    """The hard timeout a switch gets for a rule that has lived since `added` (whole seconds,
    rounded up so it never expires early; at least 1, since 0 would mean none)."""
    if not hard:
        return 0
    return max(1, math.ceil(hard - (now - added) - 1e-9))


def rule_key_text(rule: Rule) -> str:
    return json.dumps([rule.table_id, rule.priority, [list(kv) for kv in rule.match]])


class LogicalCounters:
    """One logical switch's offsets: per rule serial, per logical port, per table."""

    def __init__(self) -> None:
        self.flows = Counters()
        self.ports = Counters()
        self.tables = Counters()
        self.saved_flows: Dict[str, Count] = {}  # a previous run's, by rule key, until re-added

    def rule_added(self, serial: int, rule: Rule) -> None:
        """A new serial: if a previous run counted this rule, its offset comes back."""
        if not self.saved_flows:
            return  # the usual case: nothing saved left to give back (no key to build)
        saved = self.saved_flows.pop(rule_key_text(rule), None)
        if saved is not None:
            self.flows.fold(serial, saved)

    def fold_rows(self, counters: Counters, live: Dict[int, List[Count]], sign: int = 1) -> None:
        for key, counts in live.items():
            for c in counts:
                counters.fold(key, tuple(sign * x for x in c))

    def to_doc(self, rules: Dict[int, Rule]) -> Dict[str, object]:
        flows = dict(self.saved_flows)
        for serial, count in self.flows.offset.items():
            rule = rules.get(serial)  # type: ignore[call-overload]
            if rule is not None:
                flows[rule_key_text(rule)] = count
        return {"flows": {k: list(v) for k, v in flows.items()},
                "ports": _keyed(self.ports.offset), "tables": _keyed(self.tables.offset)}

    @classmethod
    def from_doc(cls, doc: Dict[str, Dict[str, List[int]]]) -> "LogicalCounters":
        lc = cls()
        lc.saved_flows = {k: tuple(v) for k, v in doc.get("flows", {}).items()}
        for name in ("ports", "tables"):
            target: Counters = getattr(lc, name)
            for k, v in doc.get(name, {}).items():
                target.fold(int(k), tuple(int(x) for x in v))
        return lc


def _keyed(offset: Dict[Hashable, Count]) -> Dict[str, List[int]]:
    return {str(k): list(v) for k, v in offset.items()}


def total(counters: Counters, key: Hashable, live: Dict[int, List[Count]], width: int,
          ) -> Count:
    """A key's monotonic total; zeros of the given width if nothing ever counted it."""
    t = counters.total(key, live.get(key, []))  # type: ignore[arg-type]
    return t if t else (0,) * width

