"""Slice isolation for tenant controllers sharing physical switches (FlowVisor-style), as pure
functions over decoded OpenFlow 1.3 messages: a tenant's request comes in, the messages for the
switch go out (or `Refused`, which `error_msg` turns into the tenant's error); a switch's message
comes in, the tenant it belongs to and its copy go out. No I/O.

A slice is a set of ports per switch. An access port carries the slice's untagged traffic; a VLAN
slice may also have trunk ports, shared with other VLAN slices of other VLANs, where its packets
carry the 802.1Q tag `vlan`. The tenant of a VLAN slice sees one untagged network: the hypervisor
matches the tag, pushes it on the way to a trunk and pops it on the way to an access port.

Why each flow gets an in_port: a flow of one tenant must never match another's packet. Every
tenant flow is pinned to one of its ports (one copy per port when the tenant named none), and on
VLAN slices to the tag that port carries (OFPVID_NONE on access ports, `vlan` on trunks). The
hypervisor's own flows (no in_port, or a MARKER cookie) are out of every tenant's reach: a
tenant's delete is pinned the same way, and the reserved cookie is refused.

Tenant requests, per tenant and switch (a switch with no port of the slice: BAD_REQUEST/EPERM):

| request           | what is done                                | refused with                |
|-------------------|---------------------------------------------|-----------------------------|
| FLOW_MOD (every   | one copy per in_port (the one named, or     | in_port outside the slice:  |
|  command)         |  each slice port); VLAN slices: + the       |  BAD_MATCH/BAD_VALUE        |
|                   |  vlan_vid that port carries                 |                             |
|                   | the MARKER cookie (add, modify), or a       | FLOW_MOD_FAILED/EPERM       |
|                   |  cookie_mask/cookie selecting it            |                             |
|                   | a buffer_id (not NO_BUFFER)                 | BAD_REQUEST/BUFFER_UNKNOWN  |
|                   | VLAN slices: a vlan_vid or vlan_pcp match   | BAD_MATCH/BAD_FIELD         |
|                   | apply and write actions: narrowed (below)   |                             |
|                   | goto, metadata, clear, meter: unchanged     | others: BAD_INSTRUCTION/    |
|                   |                                             |  UNKNOWN_INST               |
| PACKET_OUT        | in_port: CONTROLLER or a slice port         | BAD_REQUEST/BAD_PORT        |
|                   | a buffer_id (not NO_BUFFER)                 | BAD_REQUEST/BUFFER_UNKNOWN  |
|                   | actions narrowed; the data is untagged      |                             |
| MULTIPART_REQUEST | DESC, PORT_DESC: as they are; FLOW: its     | other types: BAD_REQUEST/   |
|                   |  out_port a slice port, ANY or CONTROLLER;  |  BAD_MULTIPART; other       |
|                   |  PORT_STATS: a slice port or ANY (the       |  ports: BAD_REQUEST/EPERM   |
|                   |  replies are filtered)                      |                             |
| PORT_MOD          | a port of the slice (a trunk: of no other)  | BAD_REQUEST/EPERM           |
| GROUP_MOD,        | never: groups, meters and tables are shared | BAD_REQUEST/EPERM           |
|  METER_MOD,       |                                             |                             |
|  TABLE_MOD        |                                             |                             |

Actions, narrowed for one in_port (the flow copy's, or the packet-out's):

| action                      | becomes                               | refused with (BAD_ACTION/) |
|-----------------------------|---------------------------------------|----------------------------|
| OUTPUT a slice port         | itself, after the tag's push or pop   |                            |
| OUTPUT FLOOD, ALL           | OUTPUT each slice port but the        |                            |
|                             |  in_port, in port order               |                            |
| OUTPUT IN_PORT, CONTROLLER  | itself, the tag as the in_port        | in a packet-out from       |
|                             |  carries it; CONTROLLER's max_len     |  CONTROLLER: BAD_OUT_PORT  |
|                             |  NO_BUFFER                            |                            |
| OUTPUT TABLE                | packet-out: itself (the in_port's tag)| flow mod: BAD_OUT_PORT     |
| OUTPUT LOCAL, NORMAL, ANY,  |                                       | BAD_OUT_PORT               |
|  another slice's port       |                                       |                            |
| GROUP                       |                                       | BAD_OUT_GROUP              |
| experimenter (Nicira learn, |                                       | BAD_EXPERIMENTER           |
|  resubmit, output_reg...)   |                                       |                            |
| SET_FIELD in_port,          |                                       | BAD_SET_TYPE               |
|  in_phy_port                |                                       |                            |
| VLAN slices: PUSH/POP_VLAN, |                                       | BAD_SET_TYPE               |
|  PUSH/POP_PBB, SET_FIELD    |                                       |                            |
|  vlan_vid, vlan_pcp         |                                       |                            |
| anything else               | itself                                |                            |

The tag state (VLAN slices) starts on iff the packet came in on a trunk (a packet-out's data:
off); every apply-actions list ends with the tag as its in_port carries it, so later tables and
the action set see the packet as it came in. An action set holds one output and runs pops and
pushes before any output whatever the order written, so write-actions may have one output, to a
port tagged like the in_port (else BAD_ACTION/TOO_MANY or UNSUPPORTED_ORDER).

Switch messages: a packet-in or flow belongs to the slice of its in_port (an access port), or
on a trunk to the VLAN slice of its tag (the packet's, or the flow's vlan_vid match); a tagged
packet-in from a trunk reaches its tenant without the tag. Port status, port descriptions and
port stats go to whoever has the port; flow stats entries to the flow's owner, without the vlan
match and the tag actions the hypervisor added (its in_port copies stay: the counts are theirs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import (Any, Dict, FrozenSet, Iterable, List, Mapping, Optional, Sequence, Set,
                    Tuple)

from sdnmig import compat

ofp = compat.ofproto_v1_3
parser = compat.ofproto_v1_3_parser

#: Cookies of the hypervisor's own flows (the migration's markers): no tenant may touch them.
MARKER_COOKIE_PREFIX = 0x5AFE0000_00000000
MARKER_COOKIE_MASK = 0xFFFF0000_00000000

ETH_TYPE_8021Q = 0x8100
VID_MASK = 0x0FFF
#: the error's data: the first bytes of the failed request (OpenFlow 1.3.5, sec. 7.4.4)
ERROR_DATA_LEN = 64
MULTIPART_ALLOWED = frozenset({ofp.OFPMP_DESC, ofp.OFPMP_FLOW, ofp.OFPMP_PORT_STATS,
                               ofp.OFPMP_PORT_DESC})
_ADDS = (ofp.OFPFC_ADD, ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT)
_SELECTS = (ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT, ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT)
_TAG_ACTIONS = (parser.OFPActionPushVlan, parser.OFPActionPopVlan, parser.OFPActionPushPbb,
                parser.OFPActionPopPbb)
_PASSING_INSTRUCTIONS = (parser.OFPInstructionGotoTable, parser.OFPInstructionWriteMetadata,
                         parser.OFPInstructionMeter)


class ConfigError(ValueError):
    """The slices given cannot be enforced as they are; the message names the field."""


class Refused(Exception):
    """A tenant's request the slice does not allow: the OpenFlow error the tenant gets."""

    def __init__(self, type_: int, code: int, reason: str) -> None:
        super().__init__(reason)
        self.type = type_
        self.code = code
        self.reason = reason


def error_msg(refused: Refused, xid: int, data: bytes) -> Any:
    """The OFPT_ERROR for the tenant, carrying the start of the request it refuses."""
    msg = parser.OFPErrorMsg(compat.protocol(ofp.OFP_VERSION), type_=refused.type,
                             code=refused.code, data=bytes(data[:ERROR_DATA_LEN]))
    msg.xid = xid
    return msg


@dataclass(frozen=True)
class Slice:
    """One tenant's share of the network. Port collections are stored as frozensets."""

    tenant: str
    ports: Mapping[int, FrozenSet[int]]
    vlan: Optional[int] = None
    trunks: Mapping[int, FrozenSet[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("ports", "trunks"):
            value = getattr(self, name)
            if not isinstance(value, Mapping):
                raise ConfigError(f"slice {self.tenant!r}: {name} must map dpid -> ports")
            try:
                object.__setattr__(self, name, {k: frozenset(v) for k, v in value.items()})
            except TypeError:
                raise ConfigError(f"slice {self.tenant!r}: {name}: each dpid maps to a "
                                  "collection of ports") from None


@dataclass(frozen=True)
class _View:
    """One tenant's ports on one switch: what every per-switch decision reads."""

    tenant: str
    access: FrozenSet[int]
    trunks: FrozenSet[int]
    vlan: Optional[int]

    @property
    def ports(self) -> FrozenSet[int]:
        return self.access | self.trunks

    def tagged_at(self, port: int) -> bool:
        """Whether the slice's packets carry its tag on this port (CONTROLLER: no)."""
        return self.vlan is not None and port in self.trunks

    def vid_at(self, port: int) -> Optional[int]:
        """The vlan_vid match pinning a flow with this in_port to the slice (None: no VLAN)."""
        if self.vlan is None:
            return None
        return self.vlan | ofp.OFPVID_PRESENT if port in self.trunks else ofp.OFPVID_NONE


def _bad_out_port(port: int, why: str) -> Refused:
    return Refused(ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_PORT, f"output to {port:#x}: {why}")


class _Actions:
    """One narrowed action list, and the tag state along it on VLAN slices."""

    def __init__(self, view: _View, in_port: int, kind: str) -> None:
        self.view, self.in_port, self.kind = view, in_port, kind   # kind: apply, write, packet_out
        self.tagged = view.tagged_at(in_port) and kind != "packet_out"
        self.out: List[Any] = []

    def tag(self, on: bool) -> None:
        if self.view.vlan is None or on == self.tagged:
            return
        if self.kind == "write":
            raise Refused(ofp.OFPET_BAD_ACTION, ofp.OFPBAC_UNSUPPORTED_ORDER,
                          "write-actions may only output to ports tagged like the in_port: the "
                          "action set runs the tag's push or pop before every output")
        if on:
            self.out += [parser.OFPActionPushVlan(ETH_TYPE_8021Q),
                         parser.OFPActionSetField(vlan_vid=self.view.vlan | ofp.OFPVID_PRESENT)]
        else:
            self.out.append(parser.OFPActionPopVlan())
        self.tagged = on

    def output(self, port: int, max_len: int) -> None:
        self.tag(port in self.view.trunks)
        self.out.append(parser.OFPActionOutput(port, max_len))

    def add(self, action: Any) -> None:
        if isinstance(action, parser.OFPActionOutput):
            self._output(action)
        elif isinstance(action, parser.OFPActionGroup):
            raise Refused(ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_GROUP,
                          "groups are shared by every slice on the switch")
        elif isinstance(action, parser.OFPActionExperimenter):
            raise Refused(ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_EXPERIMENTER,
                          "experimenter actions can reach past the slice")
        elif isinstance(action, parser.OFPActionSetField) and action.key in ("in_port",
                                                                             "in_phy_port"):
            raise Refused(ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_SET_TYPE,
                          f"set_field {action.key}: the in_port pins a packet to its slice")
        elif self.view.vlan is not None and (
                isinstance(action, _TAG_ACTIONS) or (isinstance(action, parser.OFPActionSetField)
                                                     and action.key in ("vlan_vid", "vlan_pcp"))):
            raise Refused(ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_SET_TYPE,
                          f"{type(action).__name__}: a VLAN slice's tenant sees untagged traffic")
        else:
            self.out.append(action)

    def _output(self, action: Any) -> None:
        port, view = action.port, self.view
        if port in view.ports:
            self.output(port, action.max_len)
        elif port in (ofp.OFPP_FLOOD, ofp.OFPP_ALL):
            for p in sorted(view.ports - {self.in_port}):
                self.output(p, action.max_len)
        elif port in (ofp.OFPP_IN_PORT, ofp.OFPP_CONTROLLER) or (
                port == ofp.OFPP_TABLE and self.kind == "packet_out"):
            if self.in_port == ofp.OFPP_CONTROLLER and port != ofp.OFPP_TABLE:
                raise _bad_out_port(port, "a packet-out from CONTROLLER has no slice port to "
                                          "send it back to or tell its tenant by")
            self.tag(view.tagged_at(self.in_port))
            max_len = ofp.OFPCML_NO_BUFFER if port == ofp.OFPP_CONTROLLER else action.max_len
            self.out.append(parser.OFPActionOutput(port, max_len))
        else:
            raise _bad_out_port(port, f"not a port of slice {view.tenant!r} on this switch")

    def finish(self) -> List[Any]:
        if self.kind == "apply":
            self.tag(self.view.tagged_at(self.in_port))
        elif self.kind == "write":
            if sum(isinstance(a, parser.OFPActionOutput) for a in self.out) > 1:
                raise Refused(ofp.OFPET_BAD_ACTION, ofp.OFPBAC_TOO_MANY,
                              "write-actions: an action set holds one output (FLOOD and ALL "
                              "become one output per port)")
        return self.out


def _narrow(view: _View, in_port: int, actions: Iterable[Any], kind: str) -> List[Any]:
    acts = _Actions(view, in_port, kind)
    for action in actions:
        acts.add(action)
    return acts.finish()


def _match_with(match: Any, **fields: Any) -> Any:
    """A copy of the match with these fields set (None: removed)."""
    items = dict(match.items())
    for key, value in fields.items():
        if value is None:
            items.pop(key, None)
        else:
            items[key] = value
    return parser.OFPMatch(**items)


def _marker_selected(msg: Any) -> bool:
    if msg.command in _ADDS and msg.cookie & MARKER_COOKIE_MASK == MARKER_COOKIE_PREFIX:
        return True
    return (msg.command in _SELECTS and msg.cookie_mask & MARKER_COOKIE_MASK == MARKER_COOKIE_MASK
            and msg.cookie & MARKER_COOKIE_MASK == MARKER_COOKIE_PREFIX)


def _vlan_of(data: bytes) -> Optional[int]:
    """The VID of an 802.1Q-tagged Ethernet frame (None: untagged or too short)."""
    if len(data) < 18 or int.from_bytes(data[12:14], "big") != ETH_TYPE_8021Q:
        return None
    return int.from_bytes(data[14:16], "big") & VID_MASK


def _stats_reply(cls: Any, msg: Any, body: List[Any]) -> Any:
    out = cls(compat.protocol(ofp.OFP_VERSION), flags=msg.flags, body=body)
    out.type, out.xid = cls.cls_stats_type, msg.xid
    return out


class Slicer:
    """The slices of one hypervisor, validated, and every decision that enforces them.

    An unknown tenant name is the caller's error (KeyError); a switch where the tenant has no
    port is the tenant's (Refused, BAD_REQUEST/EPERM).
    """

    def __init__(self, slices: Iterable[Slice]) -> None:
        self._slices: Dict[str, Slice] = {}
        self._access: Dict[Tuple[int, int], str] = {}
        self._trunk: Dict[Tuple[int, int], Dict[int, str]] = {}
        self._views: Dict[Tuple[str, int], _View] = {}
        slices = list(slices)
        for s in slices:
            self._check_slice(s)
        for s in slices:   # trunks first: an access port must be no one's trunk, whatever the order
            for dpid, ports in s.trunks.items():
                for port in ports:
                    self._add_trunk(s, dpid, port)
        for s in slices:
            for dpid, ports in s.ports.items():
                for port in ports:
                    self._add_access(s, dpid, port)
            for dpid in set(s.ports) | set(s.trunks):
                view = _View(s.tenant, s.ports.get(dpid, frozenset()),
                             s.trunks.get(dpid, frozenset()), s.vlan)
                if view.ports:
                    self._views[(s.tenant, dpid)] = view

    # -- configuration --------------------------------------------------------------------------
    @classmethod
    def from_config(cls, items: Sequence[Mapping[str, Any]]) -> Slicer:
        """Slices from JSON-able dicts: {"tenant", "ports": {dpid: [port]}, "vlan", "trunks"};
        dpid keys may be ints or strings, decimal or 0x-hex."""
        if not isinstance(items, (list, tuple)):
            raise ConfigError("slices: expected a list of slice objects")
        slices = []
        for i, item in enumerate(items):
            where = f"slices[{i}]"
            if not isinstance(item, Mapping):
                raise ConfigError(f"{where}: expected an object")
            unknown = sorted(set(item) - {"tenant", "ports", "vlan", "trunks"})
            if unknown:
                raise ConfigError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}")
            tenant = item.get("tenant")
            if not isinstance(tenant, str) or not tenant:
                raise ConfigError(f"{where}.tenant: expected a non-empty string")
            where = f"slices[{i}] ({tenant!r})"
            vlan = item.get("vlan")
            if vlan is not None and (isinstance(vlan, bool) or not isinstance(vlan, int)):
                raise ConfigError(f"{where}.vlan: expected an integer or null")
            slices.append(Slice(tenant, _port_map(item.get("ports", {}), f"{where}.ports"), vlan,
                                _port_map(item.get("trunks", {}), f"{where}.trunks")))
        return cls(slices)

    def _check_slice(self, s: Slice) -> None:
        if not isinstance(s.tenant, str) or not s.tenant:
            raise ConfigError(f"tenant {s.tenant!r}: expected a non-empty string")
        if s.tenant in self._slices:
            raise ConfigError(f"tenant {s.tenant!r}: the name is used by another slice")
        self._slices[s.tenant] = s
        if s.vlan is not None and (isinstance(s.vlan, bool) or not isinstance(s.vlan, int)
                                   or not 1 <= s.vlan <= 4094):
            raise ConfigError(f"tenant {s.tenant!r}: vlan {s.vlan!r} is not in 1..4094")
        if s.vlan is None and any(s.trunks.values()):
            raise ConfigError(f"tenant {s.tenant!r}: trunks need a vlan to tell slices apart")
        for name, mapping in (("ports", s.ports), ("trunks", s.trunks)):
            for dpid, ports in mapping.items():
                if isinstance(dpid, bool) or not isinstance(dpid, int) or not 0 <= dpid < 2**64:
                    raise ConfigError(f"tenant {s.tenant!r}: {name}: dpid {dpid!r} is not a "
                                      "64-bit unsigned integer")
                for port in ports:
                    if isinstance(port, bool) or not isinstance(port, int) \
                            or not 1 <= port <= ofp.OFPP_MAX:
                        raise ConfigError(f"tenant {s.tenant!r}: {name}[{dpid}]: port {port!r} "
                                          f"is not a physical port number (1..{ofp.OFPP_MAX:#x})")

    def _add_trunk(self, s: Slice, dpid: int, port: int) -> None:
        assert s.vlan is not None, "checked: trunks need a vlan"
        vlans = self._trunk.setdefault((dpid, port), {})
        other = vlans.get(s.vlan)
        if other is not None:
            raise ConfigError(f"tenant {s.tenant!r}: trunk port {port} on switch {dpid} already "
                              f"carries vlan {s.vlan} for {other!r}")
        vlans[s.vlan] = s.tenant

    def _add_access(self, s: Slice, dpid: int, port: int) -> None:
        other = self._access.get((dpid, port))
        if other is not None:
            raise ConfigError(f"tenant {s.tenant!r}: port {port} on switch {dpid} is already an "
                              f"access port of {other!r}")
        trunk_of = sorted(self._trunk.get((dpid, port), {}).values())
        if trunk_of:
            raise ConfigError(f"tenant {s.tenant!r}: access port {port} on switch {dpid} is a "
                              f"trunk of {', '.join(map(repr, trunk_of))}")
        self._access[(dpid, port)] = s.tenant

    # -- lookups --------------------------------------------------------------------------------
    def ports(self, tenant: str, dpid: int) -> FrozenSet[int]:
        """The tenant's ports (access and trunk) on the switch; empty if it has none there."""
        self._known(tenant)
        view = self._views.get((tenant, dpid))
        return view.ports if view else frozenset()

    def tenants_on(self, dpid: int) -> List[str]:
        return sorted(t for (t, d) in self._views if d == dpid)

    def _known(self, tenant: str) -> None:
        if tenant not in self._slices:
            raise KeyError(f"no slice for tenant {tenant!r}")

    def _view(self, tenant: str, dpid: int) -> _View:
        self._known(tenant)
        view = self._views.get((tenant, dpid))
        if view is None:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_EPERM,
                          f"switch {dpid:#x} has no port of slice {tenant!r}")
        return view

    def _owner(self, dpid: int, cookie: int, match: Any) -> Optional[str]:
        """The tenant whose flow this is: by in_port, on trunks by vlan_vid (markers: nobody's)."""
        if cookie & MARKER_COOKIE_MASK == MARKER_COOKIE_PREFIX:
            return None
        port = match.get("in_port")
        if port is None:
            return None
        tenant = self._access.get((dpid, port))
        if tenant is not None:
            return tenant
        vid = match.get("vlan_vid")
        if isinstance(vid, tuple):   # a masked match is not one the hypervisor writes
            return None
        if vid is None or not vid & ofp.OFPVID_PRESENT:
            return None
        return self._trunk.get((dpid, port), {}).get(vid & VID_MASK)

    # -- tenant -> switch -----------------------------------------------------------------------
    def flow_mod(self, tenant: str, dpid: int, msg: Any) -> List[Any]:
        """The flow mods that do the tenant's on its slice only: one per in_port."""
        view = self._view(tenant, dpid)
        if _marker_selected(msg):
            raise Refused(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_EPERM,
                          f"cookies {MARKER_COOKIE_PREFIX:#x}/{MARKER_COOKIE_MASK:#x} are the "
                          "hypervisor's")
        if msg.buffer_id != ofp.OFP_NO_BUFFER:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BUFFER_UNKNOWN,
                          "switch buffers are not shared with tenants")
        if view.vlan is not None:
            for key in ("vlan_vid", "vlan_pcp"):
                if msg.match.get(key) is not None:
                    raise Refused(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_FIELD,
                                  f"match on {key}: a VLAN slice's tenant sees untagged traffic")
        named = msg.match.get("in_port")
        if named is not None and named not in view.ports:
            raise Refused(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_VALUE,
                          f"in_port {named:#x} is not a port of slice {tenant!r} on this switch")
        in_ports = [named] if named is not None else sorted(view.ports)
        out = []
        for port in in_ports:
            fm = parser.OFPFlowMod(
                compat.protocol(ofp.OFP_VERSION), cookie=msg.cookie, cookie_mask=msg.cookie_mask,
                table_id=msg.table_id, command=msg.command, idle_timeout=msg.idle_timeout,
                hard_timeout=msg.hard_timeout, priority=msg.priority, buffer_id=msg.buffer_id,
                out_port=msg.out_port, out_group=msg.out_group, flags=msg.flags,
                match=self._pinned(view, msg.match, port),
                instructions=[self._instruction(view, port, i) for i in msg.instructions])
            fm.xid = msg.xid
            out.append(fm)
        return out

    @staticmethod
    def _pinned(view: _View, match: Any, in_port: int) -> Any:
        vid = view.vid_at(in_port)
        if vid is None:
            return _match_with(match, in_port=in_port)
        return _match_with(match, in_port=in_port, vlan_vid=vid)

    def _instruction(self, view: _View, in_port: int, inst: Any) -> Any:
        if isinstance(inst, parser.OFPInstructionActions):
            if inst.type == ofp.OFPIT_APPLY_ACTIONS:
                return parser.OFPInstructionActions(inst.type,
                                                    _narrow(view, in_port, inst.actions, "apply"))
            if inst.type == ofp.OFPIT_WRITE_ACTIONS:
                return parser.OFPInstructionActions(inst.type,
                                                    _narrow(view, in_port, inst.actions, "write"))
            if inst.type == ofp.OFPIT_CLEAR_ACTIONS:
                return inst
        elif isinstance(inst, _PASSING_INSTRUCTIONS):
            return inst
        raise Refused(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_UNKNOWN_INST,
                      f"instruction {type(inst).__name__} is not sliced")

    def packet_out(self, tenant: str, dpid: int, msg: Any) -> Any:
        """The packet-out with its actions narrowed; the tenant's data is untagged."""
        view = self._view(tenant, dpid)
        if msg.buffer_id != ofp.OFP_NO_BUFFER:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BUFFER_UNKNOWN,
                          "switch buffers are not shared with tenants")
        if msg.in_port != ofp.OFPP_CONTROLLER and msg.in_port not in view.ports:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_PORT,
                          f"in_port {msg.in_port:#x} is not a port of slice {tenant!r} here")
        actions = _narrow(view, msg.in_port, msg.actions or [], "packet_out")
        out = parser.OFPPacketOut(compat.protocol(ofp.OFP_VERSION), buffer_id=msg.buffer_id,
                                  in_port=msg.in_port, actions=actions, data=msg.data)
        out.xid = msg.xid
        return out

    def port_stats_request(self, tenant: str, dpid: int, msg: Any) -> Any:
        view = self._view(tenant, dpid)
        if msg.port_no != ofp.OFPP_ANY and msg.port_no not in view.ports:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_EPERM,
                          f"port {msg.port_no:#x} is not a port of slice {tenant!r} here")
        return msg

    def multipart_request(self, tenant: str, dpid: int, msg: Any) -> Any:
        """The request as the switch may get it (the replies are filtered), or Refused."""
        view = self._view(tenant, dpid)
        if msg.type not in MULTIPART_ALLOWED:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_MULTIPART,
                          f"multipart type {msg.type} would show other slices' counts")
        if msg.type == ofp.OFPMP_PORT_STATS:
            return self.port_stats_request(tenant, dpid, msg)
        if msg.type == ofp.OFPMP_FLOW and msg.out_port not in view.ports | {
                ofp.OFPP_ANY, ofp.OFPP_CONTROLLER}:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_EPERM,
                          f"out_port {msg.out_port:#x} is not a port of slice {tenant!r} here")
        return msg

    def check(self, tenant: str, dpid: int, msg: Any) -> None:
        """GROUP_MOD, METER_MOD, TABLE_MOD: refused; PORT_MOD: for a port of the slice alone."""
        kind = type(msg).cls_msg_type
        if kind not in (ofp.OFPT_GROUP_MOD, ofp.OFPT_METER_MOD, ofp.OFPT_TABLE_MOD,
                        ofp.OFPT_PORT_MOD):
            raise ValueError(f"check() decides GROUP/METER/TABLE/PORT_MOD, not "
                             f"{type(msg).__name__}")
        view = self._view(tenant, dpid)
        if kind != ofp.OFPT_PORT_MOD:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_EPERM,
                          f"{type(msg).__name__}: groups, meters and tables are shared")
        sharing = self._trunk.get((dpid, msg.port_no), {})
        if msg.port_no not in view.ports or len(sharing) > 1:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_EPERM,
                          f"port {msg.port_no:#x}: not a port of slice {tenant!r} alone")

    # -- switch -> tenant -----------------------------------------------------------------------
    def packet_in(self, dpid: int, msg: Any) -> Optional[Tuple[str, Any]]:
        """Whose packet it is and the packet-in that tenant gets; None: nobody's (dropped)."""
        port = msg.match.get("in_port")
        tenant = self._access.get((dpid, port))
        if tenant is not None:
            return tenant, msg
        vlans = self._trunk.get((dpid, port))
        vid = _vlan_of(msg.data) if vlans else None
        tenant = vlans.get(vid) if vlans and vid is not None else None
        if tenant is None:
            return None
        data = msg.data[:12] + msg.data[16:]
        out = parser.OFPPacketIn(compat.protocol(ofp.OFP_VERSION), buffer_id=msg.buffer_id,
                                 total_len=msg.total_len - 4, reason=msg.reason,
                                 table_id=msg.table_id, cookie=msg.cookie, match=msg.match,
                                 data=data)
        out.xid = msg.xid
        if msg.msg_len is not None:
            out.msg_len = msg.msg_len - 4
        return tenant, out

    def flow_removed(self, dpid: int, msg: Any) -> Optional[str]:
        """The tenant whose flow was removed; None for the hypervisor's own or nobody's."""
        return self._owner(dpid, msg.cookie, msg.match)

    def port_status(self, dpid: int, msg: Any) -> List[str]:
        """The tenants who see this port (as an access port or a trunk of theirs)."""
        port = msg.desc.port_no
        seen: Set[str] = set(self._trunk.get((dpid, port), {}).values())
        if (dpid, port) in self._access:
            seen.add(self._access[(dpid, port)])
        return sorted(seen)

    def port_desc_reply(self, tenant: str, dpid: int, msg: Any) -> Any:
        ports = self.ports(tenant, dpid)
        return _stats_reply(parser.OFPPortDescStatsReply, msg,
                            [p for p in msg.body if p.port_no in ports])

    def port_stats_reply(self, tenant: str, dpid: int, msg: Any) -> Any:
        ports = self.ports(tenant, dpid)
        return _stats_reply(parser.OFPPortStatsReply, msg,
                            [p for p in msg.body if p.port_no in ports])

    def flow_stats_reply(self, tenant: str, dpid: int, msg: Any) -> Any:
        """The tenant's flows only, without the vlan match and tag actions the hypervisor added
        (the per-in_port copies stay: each has its own counts)."""
        self._known(tenant)
        view = self._views.get((tenant, dpid))
        body = [self._as_tenant_wrote(view, s) for s in msg.body
                if view is not None and self._owner(dpid, s.cookie, s.match) == tenant]
        return _stats_reply(parser.OFPFlowStatsReply, msg, body)

    @staticmethod
    def _as_tenant_wrote(view: _View, stats: Any) -> Any:
        if view.vlan is None:
            return stats
        insts = []
        for inst in stats.instructions:
            if isinstance(inst, parser.OFPInstructionActions):
                kept = [a for a in inst.actions if not isinstance(a, _TAG_ACTIONS) and not (
                    isinstance(a, parser.OFPActionSetField) and a.key == "vlan_vid")]
                inst = parser.OFPInstructionActions(inst.type, kept)
            insts.append(inst)
        return parser.OFPFlowStats(
            table_id=stats.table_id, duration_sec=stats.duration_sec,
            duration_nsec=stats.duration_nsec, priority=stats.priority,
            idle_timeout=stats.idle_timeout, hard_timeout=stats.hard_timeout, flags=stats.flags,
            cookie=stats.cookie, packet_count=stats.packet_count, byte_count=stats.byte_count,
            match=_match_with(stats.match, vlan_vid=None), instructions=insts)


def _port_map(value: Any, where: str) -> Dict[int, FrozenSet[int]]:
    """{dpid: [port]} from JSON: dpid keys as ints or decimal / 0x-hex strings."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected an object mapping dpid -> list of ports")
    out: Dict[int, FrozenSet[int]] = {}
    for key, ports in value.items():
        dpid = _dpid(key, where)
        if not isinstance(ports, (list, tuple)) or not all(
                isinstance(p, int) and not isinstance(p, bool) for p in ports):
            raise ConfigError(f"{where}[{key!r}]: expected a list of port numbers")
        if dpid in out:
            raise ConfigError(f"{where}[{key!r}]: dpid {dpid} is given twice")
        out[dpid] = frozenset(ports)
    return out


def _dpid(key: Any, where: str) -> int:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str):
        text = key.strip().lower()
        try:
            if text.startswith("0x"):
                return int(text[2:], 16)
            if text.isdigit():
                return int(text, 10)
        except ValueError:
            pass
    raise ConfigError(f"{where}: dpid {key!r} is not a decimal or 0x-hex number")
