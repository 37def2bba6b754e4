"""Where each logical switch lives: its physical instances and, on each, where its ports are. No I/O.

Apps see a logical switch: one dpid and one set of port numbers (those of the switch it started
as). While LIME migrates it, two or more physical OVS bridges (instances) carry its traffic. On
each instance every logical port has

- an *output place*: `Local(p)` (this bridge's own port p), or `Tunnel(via, vid, peer, peer_port)`
  (the port is on another instance: push VLAN `vid`, send out of `via`; the peer bridge gets it on
  `peer_port`, pops the tag and sends it out of its local port; `vid` names the logical port there),
  or none (no way to reach it from here: outputs to it are dropped on this instance);
- any number of *input ports*: physical ports whose packets the apps see as arriving on it. A
  neighbour of a cloned switch has two (the links to the old and to the new instance), so every
  rule that matches that in_port is installed once per physical input.

An instance may instead be a *relay* (`Relay`, Tunnel ASAP): it holds none of the apps' rules and
sends whatever arrives on its inputs, tagged with the logical port, to another instance, which
handles it as if it had arrived on its own input of that port. Promoting a relay gives it the
rules first (`holds_rules`), then ends the relaying.

The map is saved as JSON (in Redis, by the adapter) so a controller restart finds a migration where
it was and can resume or roll it back.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from lime_shim.model import is_physical

VID_MIN, VID_MAX = 1, 4094


class MappingError(ValueError):
    """A request that does not fit the current map (unknown switch, port in use, ...)."""


@dataclass(frozen=True)
class Local:
    port: int


@dataclass(frozen=True)
class Tunnel:
    via: int        # this instance's port toward the peer
    vid: int        # the VLAN id that names the logical port at the peer
    peer: int       # the peer instance's physical dpid
    peer_port: int  # the peer's port the tunnel arrives on


Place = Union[Local, Tunnel]
RELAY_VID_BASE = 2048  # relayed logical port p travels as VLAN 2048 + p (tunnels use low ids)


@dataclass(frozen=True)
class Relay:
    """An instance that forwards nothing itself: every packet arriving on one of its inputs is
    tagged with its logical port (relay_vid) and sent out of `via` to `peer`, which takes it in
    on `peer_port` as if it had arrived on its own input of that logical port (Tunnel ASAP)."""

    via: int
    peer: int
    peer_port: int


def relay_vid(lport: int) -> int:
    vid = RELAY_VID_BASE + lport
    if not VID_MIN <= vid <= VID_MAX:
        raise MappingError(f"logical port {lport} cannot be relayed (VLAN {vid} out of range)")
    return vid


@dataclass
class Instance:
    dpid: int
    out: Dict[int, Place] = field(default_factory=dict)   # logical port -> output place
    ins: Dict[int, int] = field(default_factory=dict)     # physical port -> logical port
    relay: Optional[Relay] = None
    holds_rules: bool = True  # False: a relay without the apps' rules (ASAP before finalize)

    def inputs_of(self, lport: int) -> Tuple[int, ...]:
        return tuple(sorted(p for p, lp in self.ins.items() if lp == lport))

    def local(self, lport: int) -> Optional[int]:
        place = self.out.get(lport)
        return place.port if isinstance(place, Local) else None


@dataclass
class LogicalSwitch:
    dpid: int
    ports: Tuple[int, ...]
    instances: Dict[int, Instance] = field(default_factory=dict)

    @property
    def migrating(self) -> bool:
        return len(self.instances) > 1

    def instance(self, pdpid: int) -> Instance:
        try:
            return self.instances[pdpid]
        except KeyError:
            raise MappingError(f"{pdpid:#x} is not an instance of logical switch {self.dpid:#x}")

    def home_of(self, lport: int) -> Optional[int]:
        """The instance where the port is local (the lowest dpid if several), or None."""
        homes = sorted(d for d, i in self.instances.items() if i.local(lport) is not None)
        return homes[0] if homes else None


class Mapping:
    """Every logical switch, and which physical dpid belongs to which."""

    def __init__(self) -> None:
        self.switches: Dict[int, LogicalSwitch] = {}
        self.version = 0  # bumped by every change: what adapters cache from the map keys on it

    # -- lookups ------------------------------------------------------------------------------------
    def logical(self, dpid: int) -> LogicalSwitch:
        try:
            return self.switches[dpid]
        except KeyError:
            raise MappingError(f"unknown logical switch {dpid:#x}") from None

    def owner(self, pdpid: int) -> Optional[LogicalSwitch]:
        """The logical switch a physical bridge is an instance of, if any."""
        for ls in self.switches.values():
            if pdpid in ls.instances:
                return ls
        return None

    def __iter__(self) -> Iterator[LogicalSwitch]:
        return iter(self.switches.values())

    # -- changes (each checks everything first, then changes, so a refused one changes nothing) -----
    def add_switch(self, dpid: int, ports: Tuple[int, ...]) -> LogicalSwitch:
        """A physical switch seen for the first time: it is its own logical switch, ports local."""
        if dpid in self.switches or self.owner(dpid) is not None:
            raise MappingError(f"switch {dpid:#x} is already mapped")
        _check_ports(ports)
        inst = Instance(dpid, {p: Local(p) for p in ports}, {p: p for p in ports})
        ls = LogicalSwitch(dpid, tuple(sorted(ports)), {dpid: inst})
        self.switches[dpid] = ls
        self.version += 1
        return ls

    def add_instance(self, dpid: int, inst: Instance) -> None:
        """Clone target: `inst` becomes a further instance of logical switch `dpid`."""
        ls = self.logical(dpid)
        holder = self.owner(inst.dpid)
        if holder is not None:
            raise MappingError(f"clone target {inst.dpid:#x} is already in use (by logical switch "
                               f"{holder.dpid:#x})")
        if inst.dpid in self.switches:
            raise MappingError(f"clone target {inst.dpid:#x} is a logical switch itself")
        self.check_instance(ls, inst)
        ls.instances[inst.dpid] = inst
        self.version += 1

    def set_instance(self, dpid: int, inst: Instance) -> None:
        """Replace an existing instance's places (a host moved, a neighbour's link changed)."""
        ls = self.logical(dpid)
        ls.instance(inst.dpid)
        self.check_instance(ls, inst)
        ls.instances[inst.dpid] = inst
        self.version += 1

    def move_whole(self, dpid: int, inst: Instance) -> Dict[int, Instance]:
        """Freeze and copy: `inst` becomes the switch's only instance at once. Returns the
        instances it had (to put back with `restore`)."""
        ls = self.logical(dpid)
        before = dict(ls.instances)
        holder = self.owner(inst.dpid)
        if holder is not None and holder is not ls:
            raise MappingError(f"clone target {inst.dpid:#x} is already in use (by logical switch "
                               f"{holder.dpid:#x})")
        ls.instances = {inst.dpid: inst}
        try:
            self.check_instance(ls, inst)
        except MappingError:
            ls.instances = before
            raise
        self.version += 1
        return before

    def restore(self, dpid: int, instances: Dict[int, Instance]) -> None:
        self.logical(dpid).instances = dict(instances)
        self.version += 1

    def remove_instance(self, dpid: int, pdpid: int) -> None:
        ls = self.logical(dpid)
        self.check_remove(ls, pdpid)
        del ls.instances[pdpid]
        self.version += 1

    def check_remove(self, ls: LogicalSwitch, pdpid: int) -> None:
        """May the instance leave? (Asked before a retire changes anything.)"""
        dpid = ls.dpid
        ls.instance(pdpid)
        if len(ls.instances) == 1:
            raise MappingError(f"{pdpid:#x} is the last instance of {dpid:#x}: it cannot be retired")
        for other in ls.instances.values():
            if other.dpid != pdpid and any(isinstance(p, Tunnel) and p.peer == pdpid
                                           for p in other.out.values()):
                raise MappingError(f"instance {other.dpid:#x} still tunnels to {pdpid:#x}")
            if other.relay is not None and other.relay.peer == pdpid:
                raise MappingError(f"instance {other.dpid:#x} still relays to {pdpid:#x}")
        if not any(i.holds_rules for d, i in ls.instances.items() if d != pdpid):
            raise MappingError(f"{pdpid:#x} is the last instance of {dpid:#x} holding its rules")

    def check_instance(self, ls: LogicalSwitch, inst: Instance) -> None:
        """Would the logical switch, with `inst` added or replaced, still forward correctly?"""
        after = dict(ls.instances)
        after[inst.dpid] = inst
        arriving: Dict[Tuple[int, int, int], Tuple[int, int]] = {}  # (peer, port, vid) -> from
        for i in after.values():
            self._check_places(ls, after, i)
            for lport, place in i.out.items():
                if isinstance(place, Tunnel):
                    key = (place.peer, place.peer_port, place.vid)
                    if key in arriving:
                        raise MappingError(f"two tunnels into {place.peer:#x} port "
                                           f"{place.peer_port} use VLAN {place.vid}")
                    arriving[key] = (i.dpid, lport)
        for i in after.values():
            if i.relay is not None:
                self._check_relay(ls, after, i, arriving)
        if not any(i.holds_rules for i in after.values()):
            raise MappingError(f"no instance of {ls.dpid:#x} would hold its rules")
        for (peer, port, _vid) in arriving:
            p = after[peer]
            if port in p.ins or any(pl == Local(port) for pl in p.out.values()):
                raise MappingError(f"tunnel port {port} of {peer:#x} is also a port of the switch")

    @staticmethod
    def _check_relay(ls: LogicalSwitch, after: Dict[int, Instance], inst: Instance,
                     arriving: Dict[Tuple[int, int, int], Tuple[int, int]]) -> None:
        r = inst.relay
        assert r is not None
        home = after.get(r.peer)
        if home is None or r.peer == inst.dpid or home.relay is not None or not home.holds_rules:
            raise MappingError(f"{inst.dpid:#x} relays to {r.peer:#x}, which is not another "
                               f"instance of {ls.dpid:#x} holding its rules")
        if r.via in inst.ins or any(pl == Local(r.via) for pl in inst.out.values()):
            raise MappingError(f"relay port {r.via} of {inst.dpid:#x} is also a port of the switch")
        for lport in sorted(set(inst.ins.values())):
            if not home.inputs_of(lport):
                raise MappingError(f"{inst.dpid:#x} relays port {lport} to {r.peer:#x}, which "
                                   f"has no input for it")
            key = (r.peer, r.peer_port, relay_vid(lport))
            if key in arriving:
                raise MappingError(f"two tunnels into {r.peer:#x} port {r.peer_port} use VLAN "
                                   f"{key[2]}")
            arriving[key] = (inst.dpid, lport)

    @staticmethod
    def _check_places(ls: LogicalSwitch, after: Dict[int, Instance], inst: Instance) -> None:
        locals_seen: Dict[int, int] = {}
        vias = set()
        for lport, place in inst.out.items():
            if lport not in ls.ports:
                raise MappingError(f"{lport} is not a port of logical switch {ls.dpid:#x}")
            if isinstance(place, Local):
                if not is_physical(place.port):
                    raise MappingError(f"bad physical port {place.port}")
                if locals_seen.setdefault(place.port, lport) != lport:
                    raise MappingError(f"port {place.port} of {inst.dpid:#x} cannot be logical "
                                       f"ports {locals_seen[place.port]} and {lport}")
                if inst.ins.get(place.port, lport) != lport:
                    raise MappingError(f"port {place.port} of {inst.dpid:#x} is an input of "
                                       f"logical port {inst.ins[place.port]}, not {lport}")
                continue
            if not VID_MIN <= place.vid <= VID_MAX:
                raise MappingError(f"tunnel VLAN id {place.vid} out of 1..4094")
            peer = after.get(place.peer)
            if peer is None or place.peer == inst.dpid:
                raise MappingError(f"tunnel peer {place.peer:#x} is not another instance of "
                                   f"{ls.dpid:#x}")
            if peer.local(lport) is None:
                raise MappingError(f"port {lport} is not local on tunnel peer {place.peer:#x}")
            vias.add(place.via)
        for pport, lport in inst.ins.items():
            if lport not in ls.ports or not is_physical(pport):
                raise MappingError(f"bad input port {pport} -> {lport}")
        clash = vias & (set(locals_seen) | set(inst.ins))
        if clash:
            raise MappingError(f"tunnel port(s) {sorted(clash)} of {inst.dpid:#x} are also ports "
                               "of the switch")

    # -- persistence --------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps([_ls_doc(ls) for ls in self.switches.values()], sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Mapping":
        m = cls()
        try:
            for doc in json.loads(text):
                ls = LogicalSwitch(int(doc["dpid"]), tuple(int(p) for p in doc["ports"]))
                for idoc in doc["instances"]:
                    ls.instances[int(idoc["dpid"])] = _instance(idoc)
                m.switches[ls.dpid] = ls
        except (ValueError, KeyError, TypeError) as e:
            raise MappingError(f"saved map does not parse: {e}") from None
        return m


def _check_ports(ports: Tuple[int, ...]) -> None:
    if len(set(ports)) != len(ports) or not all(is_physical(p) for p in ports):
        raise MappingError(f"bad port list {ports!r}")


def _place_doc(place: Place) -> List[int]:
    if isinstance(place, Local):
        return [place.port]
    return [place.via, place.vid, place.peer, place.peer_port]


def _ls_doc(ls: LogicalSwitch) -> Dict[str, Any]:
    return {"dpid": ls.dpid, "ports": list(ls.ports),
            "instances": [_instance_doc(i) for i in ls.instances.values()]}


def _instance_doc(i: Instance) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"dpid": i.dpid,
                           "out": {str(k): _place_doc(v) for k, v in sorted(i.out.items())},
                           "ins": {str(k): v for k, v in sorted(i.ins.items())}}
    if i.relay is not None:  # (only then: a map without relays is saved as before)
        doc["relay"] = [i.relay.via, i.relay.peer, i.relay.peer_port]
    if not i.holds_rules:
        doc["holds_rules"] = False
    return doc


def _instance(doc: Dict[str, Any]) -> Instance:
    out: Dict[int, Place] = {}
    for k, v in doc["out"].items():
        out[int(k)] = Local(int(v[0])) if len(v) == 1 else Tunnel(*(int(x) for x in v))
    relay = doc.get("relay")
    holds = doc.get("holds_rules", True)
    if not isinstance(holds, bool):
        raise TypeError(f"holds_rules {holds!r} is not true or false")
    if relay is not None and (not isinstance(relay, list) or len(relay) != 3):
        raise TypeError(f"relay {relay!r} is not [via, peer, peer_port]")
    if not holds and relay is None:
        raise ValueError("an instance without the rules must be a relay")
    return Instance(int(doc["dpid"]), out, {int(k): int(v) for k, v in doc["ins"].items()},
                    Relay(*(int(x) for x in relay)) if relay is not None else None, holds)
