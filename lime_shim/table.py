"""The apps' flow tables as the apps wrote them (logical ports), with OpenFlow's FLOW_MOD rules. No I/O.

The shim keeps them to clone a switch (copy every rule to the new instance), to re-translate
rules when the map changes (a host moved), to time rules out while migrating, and to forward a
packet itself by the *new* rules during a two-phase update.

| FLOW_MOD        | entries it touches                                 | effect                         |
|-----------------|----------------------------------------------------|--------------------------------|
| ADD             | the one with the same (table, priority, match)     | replaced (same serial: counters|
|                 |                                                    | kept, unless RESET_COUNTS)     |
| ADD             | none                                               | new entry, new serial          |
| MODIFY          | every entry at least as specific as the match,     | instructions replaced          |
|                 | cookie filter passing                              |                                |
| MODIFY_STRICT   | the same key, cookie filter passing                | instructions replaced          |
| DELETE          | as MODIFY, and out_port / out_group filters;       | removed                        |
|                 | table OFPTT_ALL: every table                       |                                |
| DELETE_STRICT   | the same key, filters passing                      | removed                        |
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterable, List, Optional, Tuple

from lime_shim.model import OFPP_ANY, Match, Rule

OFPFC_ADD, OFPFC_MODIFY, OFPFC_MODIFY_STRICT, OFPFC_DELETE, OFPFC_DELETE_STRICT = range(5)
OFPTT_ALL = 0xFF
OFPG_ANY = 0xFFFFFFFF
OFPFF_RESET_COUNTS = 1 << 2
MAX_GOTO = 255


@dataclass(frozen=True)
class Entry:
    serial: int
    rule: Rule
    added: float


@dataclass(frozen=True)
class FlowMod:
    command: int
    rule: Rule                   # table_id, priority, match, actions, cookie, timeouts, flags
    cookie_mask: int = 0
    out_port: int = OFPP_ANY
    out_group: int = OFPG_ANY


@dataclass(frozen=True)
class Change:
    added: Tuple[Entry, ...] = ()     # new entries and replaced instructions (same serial)
    removed: Tuple[Entry, ...] = ()   # gone (an ADD that replaced keeps its serial: not here)


class FlowTable:
    def __init__(self) -> None:
        self.entries: Dict[Tuple[int, int, Match], Entry] = {}
        self.keys: Dict[int, Tuple[int, int, Match]] = {}  # serial -> key (packet-ins ask by serial)
        self.next_serial = 1

    def __len__(self) -> int:
        return len(self.entries)

    def by_serial(self, serial: int) -> Optional[Entry]:
        e = self.entries.get(self.keys.get(serial))  # type: ignore[arg-type]
        return e if e is not None and e.serial == serial else None

    def _put(self, e: Entry) -> None:
        old = self.entries.get(e.rule.key)
        if old is not None and old.serial != e.serial:
            self.keys.pop(old.serial, None)
        self.entries[e.rule.key] = e
        self.keys[e.serial] = e.rule.key

    def _drop(self, e: Entry) -> None:
        del self.entries[e.rule.key]
        self.keys.pop(e.serial, None)

    def apply(self, fm: FlowMod, now: float) -> Change:
        r = fm.rule
        if fm.command == OFPFC_ADD:
            old = self.entries.get(r.key)
            if old is not None and not r.flags & OFPFF_RESET_COUNTS:
                e = Entry(old.serial, r, now)
                self._put(e)
                return Change(added=(e,))
            e = Entry(self._serial(), r, now)
            self._put(e)
            return Change(added=(e,), removed=(old,) if old is not None else ())
        if fm.command in (OFPFC_MODIFY, OFPFC_MODIFY_STRICT):
            hit = self._select(fm, strict=fm.command == OFPFC_MODIFY_STRICT, filters=False)
            changed = []
            for e in hit:
                ne = Entry(e.serial, replace(e.rule, actions=r.actions, goto=r.goto, extra=r.extra),
                           e.added)
                self._put(ne)
                changed.append(ne)
            return Change(added=tuple(changed))
        if fm.command in (OFPFC_DELETE, OFPFC_DELETE_STRICT):
            hit = self._select(fm, strict=fm.command == OFPFC_DELETE_STRICT, filters=True)
            for e in hit:
                self._drop(e)
            return Change(removed=tuple(hit))
        raise ValueError(f"unknown FLOW_MOD command {fm.command}")

    def remove(self, serial: int) -> Optional[Entry]:
        e = self.by_serial(serial)
        if e is not None:
            self._drop(e)
        return e

    def _serial(self) -> int:
        s = self.next_serial
        self.next_serial += 1
        return s

    def _select(self, fm: FlowMod, strict: bool, filters: bool) -> List[Entry]:
        r = fm.rule
        out = []
        for e in sorted(self.entries.values(), key=lambda e: e.serial):
            er = e.rule
            if r.table_id != OFPTT_ALL and er.table_id != r.table_id:
                continue
            if fm.cookie_mask and (er.cookie ^ r.cookie) & fm.cookie_mask:
                continue
            if strict:
                if (er.priority, er.match) != (r.priority, r.match):
                    continue
            elif not covers(r.match, er.match):
                continue
            if filters and fm.out_port != OFPP_ANY and fm.out_port not in er.outputs():
                continue
            if filters and fm.out_group != OFPG_ANY:
                continue  # the shim does not translate groups; no rule names one it knows
            out.append(e)
        return out

    def best(self, fields: Dict[str, Any], table_id: int = 0) -> Optional[Entry]:
        """The entry a packet with these header fields meets in one table (None: a miss)."""
        hits = [e for e in self.entries.values()
                if e.rule.table_id == table_id and packet_matches(e.rule.match, fields)]
        return max(hits, key=lambda e: (e.rule.priority, -e.serial)) if hits else None

    def lookup(self, fields: Dict[str, Any], table_id: int = 0) -> List[Entry]:
        """The entries a packet with these header fields meets, following goto-table."""
        path: List[Entry] = []
        for _ in range(MAX_GOTO):
            best = self.best(fields, table_id)
            if best is None:
                break
            path.append(best)
            if best.rule.goto is None or best.rule.goto <= table_id:
                break
            table_id = best.rule.goto
        return path

    def rules(self) -> Iterable[Entry]:
        return sorted(self.entries.values(), key=lambda e: e.serial)


def covers(general: Match, specific: Match) -> bool:
    """Is every field of `general` in `specific`, with a value at least as specific?"""
    have = dict(specific)
    for k, v in general:
        if k not in have:
            return False
        sv = have[k]
        if isinstance(v, tuple):
            value, mask = _num(k, v[0]), _num(k, v[1])
            s_value, s_mask = (_num(k, sv[0]), _num(k, sv[1])) if isinstance(sv, tuple) \
                else (_num(k, sv), -1)
            if s_mask & mask != mask or (s_value ^ value) & mask:
                return False
        elif isinstance(sv, tuple) or _num(k, sv) != _num(k, v):
            return False
    return True


def packet_matches(match: Match, fields: Dict[str, Any]) -> bool:
    for k, v in match:
        if k not in fields:
            return False
        got = _num(k, fields[k])
        if isinstance(v, tuple):
            mask = _num(k, v[1])
            if (got ^ _num(k, v[0])) & mask:
                return False
        elif got != _num(k, v):
            return False
    return True


def _num(field: str, v: Any) -> int:
    """MAC and IPv4/IPv6 address text as integers, so masks apply; ints as they are."""
    if isinstance(v, int):
        return v
    if isinstance(v, str):
        if field.startswith("eth_") or field.startswith("arp_sha") or field.startswith("arp_tha"):
            return int(v.replace(":", "").replace("-", ""), 16)
        return int(ipaddress.ip_address(v))
    raise ValueError(f"cannot compare {field}={v!r}")
