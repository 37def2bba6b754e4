"""L2 learning decisions, per switch, with no I/O.

The core keeps a cache of each switch's MAC table; the authoritative copy is in the instance's
Redis (see `store.py`). Every call returns the decision *and* the writes that make Redis agree with
it; the adapter commits those writes before it sends anything the decision caused, so what the
switch was told is always already in Redis.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

Mac = bytes  # 6 raw bytes


def mac_text(mac: Mac) -> str:
    return mac.hex(":")


def mac_of(text: str) -> Mac:
    """The inverse of `mac_text` (colons optional)."""
    return bytes.fromhex(text.replace(":", ""))


def is_group(mac: Mac) -> bool:
    return bool(mac[0] & 1)


#: Link-local group addresses (STP, LLDP, pause, 802.1X): never forwarded by a bridge.
def is_link_local(mac: Mac) -> bool:
    return mac[:5] == b"\x01\x80\xc2\x00\x00" and mac[5] <= 0x0F


@dataclass(frozen=True)
class Learn:
    """Redis write: mac is now reached through port (port None: forget it)."""

    dpid: int
    mac: Mac
    port: Optional[int]


@dataclass(frozen=True)
class Count:
    """Redis write: add n to a per-switch counter (field 'host:<mac>' for per-host packet-ins)."""

    dpid: int
    field: str
    n: int = 1


Write = object  # Learn | Count


@dataclass(frozen=True)
class Forward:
    """Send the packet out of `port` (None: flood), and install a flow for the pair if `install`."""

    port: Optional[int]
    install: bool


@dataclass
class LearningCore:
    tables: Dict[int, Dict[Mac, int]] = field(default_factory=dict)

    def load(self, dpid: int, table: Dict[Mac, int]) -> None:
        self.tables[dpid] = dict(table)

    def forget_switch(self, dpid: int) -> None:
        self.tables.pop(dpid, None)

    def known(self, dpid: int) -> bool:
        return dpid in self.tables

    def packet_in(self, dpid: int, in_port: int, src: Mac, dst: Mac
                  ) -> Tuple[Optional[Forward], List[Write]]:
        """None as the decision means: drop (link-local frames, or one that would go back out)."""
        table = self.tables.setdefault(dpid, {})
        writes: List[Write] = [Count(dpid, "packet_in")]
        if is_link_local(dst):
            return None, writes
        if not is_group(src):
            writes.append(Count(dpid, "host:" + mac_text(src)))
            if table.get(src) != in_port:
                table[src] = in_port
                writes.append(Learn(dpid, src, in_port))
        out = None if is_group(dst) else table.get(dst)
        if out is None:
            writes.append(Count(dpid, "flooded"))
            return Forward(None, False), writes
        if out == in_port:
            return None, writes
        writes.append(Count(dpid, "installed"))
        return Forward(out, True), writes

    def port_down(self, dpid: int, port: int) -> List[Write]:
        """Forget every host learnt on a port that went down."""
        table = self.tables.get(dpid, {})
        gone = [mac for mac, p in table.items() if p == port]
        for mac in gone:
            del table[mac]
        return [Learn(dpid, mac, None) for mac in gone]
