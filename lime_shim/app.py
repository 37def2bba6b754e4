"""The LIME shim as a platform app: the thin adapter around the pure cores of this package.

Below it, the platform's OpenFlow connections to physical bridges (their mastership negotiated by
the role manager, as for every app of the suite). Above it, apps that take their events from
`lime_shim.lime_ofp_event`: to them each logical switch is one datapath (`LogicalDatapath`)
whose `send_msg` comes here. What the shim does with each message:

| from an app (logical)  | to the instances (physical)                                        |
|------------------------|--------------------------------------------------------------------|
| FLOW_MOD               | applied to the logical table; each changed rule translated per     |
|                        | instance (translate.py); while migrating in two phases: to-shim   |
|                        | rule, barrier on every instance, `settle_s` (OVS's datapath may   |
|                        | still run the old rule after its barrier reply), then the real rule|
| PACKET_OUT             | split by where each output port is (translate.packet_out_plan)    |
| BARRIER_REQUEST        | one per instance; one reply, after all (merge.Join)               |
| FLOW/PORT/TABLE/AGGR.  | one per instance; the joined rows folded into the logical view    |
|   stats request        | (stats.py: summed, offsets, the app's rules and ports)            |
| anything else          | refused with a log line (not translated yet)                       |

| from an instance       | to the apps                                                        |
|------------------------|--------------------------------------------------------------------|
| PACKET_IN              | logical in_port, merged (merge.Dedupe); a packet a to-shim rule    |
|                        | raised is forwarded by the shim with the new rules, not reported   |
| FLOW_REMOVED (expiry)  | removed from the logical table; reported if the app asked          |
| FLOW_REMOVED (any)     | a copy's final counts become its rule's offset (every copy asks)  |
| PORT_STATUS            | reported once per logical change (merge.PortStates)               |
| connection lost        | the logical switch goes DEAD (an instance failing is the switch)   |

While a switch has several instances, a greenthread polls their flow counters every
TIMEOUT_POLL_S and times the apps' rules out itself (timeouts.py): the rule goes everywhere and
the app gets its FLOW_REMOVED with the summed counts. Back on one instance, the switch keeps the
timeouts again, the hard one with what is left of it. The instances a switch gains and loses are
seen at `reinstall`: a joining one's port and table counts are its baseline, a leaving one's are
folded in (`instance_leaving` does it ahead, while it is still polled).

Direct switches. A logical switch that is still its own bridge, with every port where it was,
and that no operation has touched yet (`translated`, kept with the map) is *direct*: the apps'
FLOW_MODs and PACKET_OUTs go to the bridge as they are (their own cookies), its packet-ins reach
the apps with only the datapath changed, statistics requests and replies pass through (renumbered
on the bridge's connection, the ports the switch hides left out), and no logical table is kept;
the bridge's own table is the logical one. Only what would mean something else on the bridge is
translated (a flood when the switch hides a port, an output to a port it does not have). This
is what keeps the shim's cost in steady state within the issue's 5 % (experiments/
lime_overhead.py). Before an operation changes a direct switch's map (clone, ensemble, freeze:
the switch and the neighbours it rewires), `adopt` reads the bridge's rules into the logical
table, holding the apps' messages meanwhile, and reinstalls them as the shim's copies: an ADD of
the same key replaces each rule in place, and OVS carries its counts over. From then on the
switch is translated as above, also once it is back on one instance.

| state       | event                               | next        | what happens                      |
|-------------|-------------------------------------|-------------|-----------------------------------|
| (new)       | bridge MASTER, identical, untouched | direct      | apps' messages pass through       |
| direct      | an operation will change its map    | adopting    | bridge's rules asked; apps' held  |
| adopting    | the rules arrive                    | translated  | table filled, copies installed,   |
|             |                                     |             | held messages sent in order       |
| adopting    | error, no answer in 5 s, disconnect | direct      | held messages sent as they are;   |
|             |                                     |             | the operation refused             |
| translated  | FLOW_REMOVED of an adopted rule,    | translated  | it leaves the table; the app is   |
|             | sent before its copy replaced it    |             | told                              |
| translated  | bridge connects again (or the shim  | translated  | every rule on the bridge deleted  |
|             | restarted)                          |             | (an adoption a crash cut short    |
|             |                                     |             | leaves the app's), copies put in  |
| translated  | (anything else)                     | translated  | never direct again                |

Operations (clone, retire, status) arrive on the instance's own Redis, channel `lime:ops` (JSON),
and are answered on the channel the request names; `operations.py` carries them out.
"""
from __future__ import annotations

import copy
import functools
import json
import logging
import random
import time
from dataclasses import replace
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple

import eventlet
import redis

from lime_shim import lime_ofp_event as lev
from lime_shim import ofconv, ofstats, stats
from lime_shim import translate as tr
from lime_shim.mapping import Instance, LogicalSwitch, Mapping, MappingError
from lime_shim.operations import Operations
from lime_shim.merge import Dedupe, Join, PortStates
from lime_shim.model import (EVERY_PORT, OFPFF_SEND_FLOW_REM, OFPP_CONTROLLER, PASS_THROUGH, Rule,
                             is_physical, match_get)
from lime_shim.table import OFPFC_ADD, OFPFC_DELETE, OFPFC_DELETE_STRICT, FlowMod, FlowTable
from lime_shim.timeouts import Timeouts
from ryu_apps import config, ofmsgs
from ryu_apps.kvs import StoreError, connect, serve
from ryu_apps.loud import MARKER, loud
from ryu_apps.loud import failed as loud_failed
from ryu_apps.roles.app import BRICK_NAME as PHYS_ROLES_BRICK
from ryu_apps.roles.core import Role
from ryu_apps.roles.events import EventRoleChanged as PhysRoleChanged
from sdnmig import compat

LOG = logging.getLogger("sdnmig.lime")
BRICK_NAME = "lime_shim"
OPS_CHANNEL = "lime:ops"
MAP_KEY = "lime:map"
COUNTERS_KEY = "lime:counters"
TIMEOUT_POLL_S = 0.5    # how often migrating instances' flow counters are read
SETTLE_S = 0.02         # default wait between a first half's barrier and the second (_two_phase)
LEAVING_WAIT_S = 5.0    # instance_leaving waits this long for the last counts
Rows = Optional[Dict[int, List[Any]]]  # joined stats rows by instance; None: not all answered


class _OnLoop(compat.event.EventBase):
    """Work for the shim's event loop, from another greenthread (see LimeShim.on_loop)."""

    def __init__(self, work: Callable[[], None]) -> None:
        super().__init__()
        self.work = work


class Direct:
    """A logical switch that is still its own bridge, untouched by any migration: its messages
    pass straight through (see "Direct switches" above). `flood_ok`: the bridge has no port the
    switch hides, so a flood means the same on both."""

    __slots__ = ("dp", "ldp", "ports", "flood_ok", "flow_mod", "packet_out", "output", "out_ok",
                 "no_buffer")

    def __init__(self, dp: Any, ldp: "LogicalDatapath", ports: FrozenSet[int]) -> None:
        ofp = ldp.ofproto
        self.dp, self.ldp, self.ports = dp, ldp, ports
        self.flood_ok = not {p for p in dp.ports if is_physical(p)} - ports
        # Read once here, not for every message an app sends (see _direct_as_is).
        self.flow_mod, self.packet_out = ofp.OFPT_FLOW_MOD, ofp.OFPT_PACKET_OUT
        self.output, self.no_buffer = ofp.OFPAT_OUTPUT, ofp.OFP_NO_BUFFER
        self.out_ok = ports | PASS_THROUGH | (EVERY_PORT if self.flood_ok else frozenset())


class LogicalDatapath:
    """What apps hold as `msg.datapath`: one per logical switch; its messages go to the shim."""

    def __init__(self, shim: "LimeShim", dpid: int, like: Any) -> None:
        self.shim = shim
        self.id = dpid
        self.ofproto = like.ofproto
        self.ofproto_parser = like.ofproto_parser
        self.xid = random.randint(0, self.ofproto.MAX_XID)
        self.is_active = True
        self.address = ("lime", dpid)
        self.ports: Dict[int, Any] = {}
        self.direct: Optional[Direct] = None  # set while the switch is direct (LimeShim.direct)

    def set_xid(self, msg: Any) -> int:
        self.xid = (self.xid + 1) & self.ofproto.MAX_XID
        msg.set_xid(self.xid)
        return self.xid

    def send_msg(self, msg: Any, close_socket: bool = False) -> bool:
        d = self.direct
        if d is not None:  # the hot path, kept short: a rule or a packet meaning the same
            t = msg.cls_msg_type
            if (t == d.flow_mod and _direct_as_is(d, msg)) or (
                    t == d.packet_out and _direct_out_as_is(d, msg)):
                return d.dp.send_msg(msg)  # numbered by the bridge's connection, as without us
        if msg.xid is None:
            self.set_xid(msg)
        return self.shim.from_app(self, msg)


class LimeShim(compat.RyuApp):
    OFP_VERSIONS = list(compat.OFPROTOS)
    _EVENTS = lev.ALL

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = BRICK_NAME
        try:
            self.cfg = config.load()
            self.spares = config.lime_spares()
            self.reserved = config.lime_reserved()
            self.hidden = config.lime_hidden()
            settle_s = config.lime_settle_s()
            self.redis = connect(self.cfg.redis_host, self.cfg.redis_port, self.cfg.redis_password)
        except (config.ConfigError, StoreError) as e:
            raise SystemExit(f"sdnmig: {e}") from None
        self.init_state()
        self.settle_s = settle_s
        self._load()
        self.ops = Operations(self)
        self.threads.append(compat.hub.spawn(self._listen_ops))
        self.threads.append(compat.hub.spawn(self._poll_loop))

    def init_state(self) -> None:
        """The shim's tables, empty (apart from __init__ so that unit tests can build a shim
        without a platform, a config or Redis)."""
        self.map = Mapping()
        self.settle_s = SETTLE_S
        self.links: Dict[int, List[List[int]]] = {}  # ldpid -> [[ndpid, nport, old, new]] (clone)
        self.tables: Dict[int, FlowTable] = {}
        self.ldps: Dict[int, LogicalDatapath] = {}
        self.phys: Dict[int, Any] = {}               # physical dpid -> connected datapath
        self.synced: Dict[int, Any] = {}             # physical dpid -> connection rules went to
        self.ready: Set[int] = set()                 # logical switches announced to the apps
        self.dedupe: Dict[int, Dedupe] = {}
        self.joins: Dict[int, Join] = {}
        self.ports: Dict[int, PortStates] = {}
        self.copies: Dict[Tuple[int, int], Dict[Any, Rule]] = {}  # (pdpid, serial) -> key -> rule
        self.ends: Dict[int, Dict[Any, Rule]] = {}   # physical dpid -> its tunnel-end rules
        self.same_cache: Dict[int, Optional[FrozenSet[int]]] = {}  # see _same
        self.same_version = -1
        self.barriers: Dict[Tuple[int, int], Tuple[int, int]] = {}  # (pdpid, xid) -> (ldpid, xid)
        self.internal: Dict[Tuple[int, int], Callable[[bool], None]] = {}  # run when all replied
        self.busy: Set[int] = set()                  # logical switches in an operation
        self.counters: Dict[int, stats.LogicalCounters] = {}
        self.counters_dirty = False
        self.timeouts: Dict[int, Timeouts] = {}      # emulated, while migrating
        self.requests: Dict[Tuple[int, int], Tuple[int, int]] = {}  # (pdpid, xid) -> (ldpid, xid)
        self.stats_wait: Dict[Tuple[int, int], Callable[[Rows], None]] = {}
        self.members: Dict[int, Dict[int, Instance]] = {}  # ldpid -> instances at last reinstall
        self.homes: Dict[int, int] = {}              # pdpid -> ldpid (also once retired)
        self.unpolled: Set[Tuple[int, int]] = set()  # (ldpid, pdpid): port/table rows not live
        self.polling: Dict[int, float] = {}         # ldpid -> when its poll was asked
        self.direct: Dict[int, Direct] = {}          # ldpid -> its bridge (pass-through)
        self.phase_wait: Dict[Tuple[int, int], Tuple[int, List[Any]]] = {}  # (ldpid, serial):
        # first halves not confirmed yet, and the packet-ins they raised meanwhile (_two_phase)
        self.translated: Set[int] = set()            # switches adopted once: never direct again
        self.adopting: Dict[int, List[Tuple[Any, Any]]] = {}  # ldpid -> apps' messages held
        self.adopted: Dict[int, Dict[Any, int]] = {}  # ldpid -> rule key -> serial, at adoption
        self.passed: Dict[Tuple[int, int], Tuple[int, int]] = {}  # (pdpid, xid) -> (ldpid, xid)
        self._roles: Any = None
        self._handlers: Dict[Tuple[type, Any], List[Tuple[str, Callable[[Any], None]]]] = {}
        self._bricks = -1                            # apps loaded when _handlers was filled
        self._pin_handlers: Any = None               # see _packet_in_handlers
        self._alone_at = -1

    # -- what apps call (as they would call the role manager) ---------------------------------------
    def admit(self, msg: Any) -> bool:
        return msg.datapath.id in self.ready

    def is_master(self, dpid: int) -> bool:
        return dpid in self.ready

    @property
    def roles(self) -> Any:
        if self._roles is None:
            self._roles = compat.app_manager.lookup_service_brick(PHYS_ROLES_BRICK)
        return self._roles

    def _ensure(self, ls: LogicalSwitch, like: Any) -> None:
        if ls.dpid not in self.tables:
            self.tables[ls.dpid] = FlowTable()
            self.dedupe[ls.dpid], self.joins[ls.dpid] = Dedupe(), Join()
            self.ports[ls.dpid] = PortStates()
            self.counters.setdefault(ls.dpid, stats.LogicalCounters())
        if ls.dpid not in self.ldps:
            self.ldps[ls.dpid] = LogicalDatapath(self, ls.dpid, like)

    # -- physical switches --------------------------------------------------------------------------
    @compat.set_ev_cls(compat.ofp_event.EventOFPStateChange,
                       [compat.MAIN_DISPATCHER, compat.DEAD_DISPATCHER])
    @loud
    def _state_change(self, ev: Any) -> None:
        dp = ev.datapath
        if dp.id is None:
            return
        if ev.state == compat.MAIN_DISPATCHER:
            self.phys[dp.id] = dp
            return
        if self.phys.get(dp.id) is not dp:
            return
        del self.phys[dp.id]
        self._requests_lost(dp.id)
        self.forget(dp.id)  # re-sent in full when it is back
        ls = self.map.owner(dp.id)
        if ls is None or ls.dpid not in self.ready:
            return
        LOG.warning("lime: instance %#x of logical switch %#x is gone: the switch is down",
                    dp.id, ls.dpid)
        self.ready.discard(ls.dpid)
        for xid in self.joins[ls.dpid].instance_lost(dp.id):
            then = self.internal.pop((ls.dpid, xid), None)
            if then is not None:
                then(False)
            else:
                LOG.warning("lime: barrier %#x of %#x not answered (switch down)", xid, ls.dpid)
        self._to_apps(lev.EventOFPStateChange(self.ldps[ls.dpid]), compat.DEAD_DISPATCHER)

    @compat.set_ev_cls(PhysRoleChanged)
    @loud
    def _role_changed(self, ev: Any) -> None:
        dp = ev.datapath
        if ev.role != Role.MASTER:
            return
        ls = self.map.owner(dp.id)
        if ls is None:
            if dp.id in self.spares:
                return  # a clone target, until a clone makes it an instance
            if dp.id in self.hidden:
                return  # e.g. a tunnel switch: connected (in `phys`), another app's to program
            if dp.id in self.map.switches:
                LOG.info("lime: %#x is a retired instance (its logical switch lives on %s): "
                         "left alone", dp.id, [f"{d:#x}" for d in self.map.switches[dp.id].instances])
                return
            hidden = self.reserved.get(dp.id, frozenset())
            ls = self.map.add_switch(dp.id, tuple(sorted(p for p in dp.ports
                                                         if is_physical(p) and p not in hidden)))
            self.save()
        self._ensure(ls, dp)
        ldp = self.ldps[ls.dpid]
        if dp.id == ls.dpid or not ldp.ports:
            ldp.ports = {p: desc for p, desc in dp.ports.items() if p in ls.ports}
        if self.synced.get(dp.id) is not dp:
            # A new connection: what the bridge holds may be an earlier run's, or older than a
            # map change made while it was away. Start it over from the logical tables.
            # A translated switch's bridge holds only the shim's copies; any other rule is one
            # an adoption cut short by a crash did not replace yet: all go.
            self.synced[dp.id] = dp
            self.forget(dp.id)
            everything = ls.dpid in self.translated or dp.id != ls.dpid
            dp.send_msg(ofmsgs.flow_delete(dp) if everything else ofconv.flow_delete_cookie_all(dp))
            self.reinstall(ls, only=dp.id)
        self._set_direct(ls, dp)
        if ls.dpid in self.ready:
            return
        if any(d not in self.phys or self.roles is None or not self.roles.is_master(d)
               for d in ls.instances):
            return
        self.ready.add(ls.dpid)
        LOG.info("lime: logical switch %#x ready on %s", ls.dpid,
                 ", ".join(f"{d:#x}" for d in ls.instances))
        self._to_apps(lev.event_for(_features(ldp)), compat.CONFIG_DISPATCHER)
        self._to_apps(lev.EventOFPStateChange(ldp), compat.MAIN_DISPATCHER)
        self._to_apps(lev.EventRoleChanged(ldp, Role.MASTER, 0, ()), None)
        for msg in ev.released:
            self._packet_in(msg)

    def _set_direct(self, ls: LogicalSwitch, dp: Any) -> None:
        """A switch no migration has touched passes its messages straight through."""
        if (ls.dpid in self.translated or ls.dpid in self.links or ls.dpid in self.adopting
                or dp.id != ls.dpid or self._same(ls) is None):
            self._direct_to(ls.dpid, None)
            return
        self._direct_to(ls.dpid, Direct(dp, self.ldps[ls.dpid], frozenset(ls.ports)))

    def _direct_to(self, ldpid: int, d: Optional[Direct]) -> Optional[Direct]:
        """The switch direct (through `d`), or not (None); what it was."""
        was = self.direct.pop(ldpid, None)
        if d is not None:
            self.direct[ldpid] = d
        self.ldps[ldpid].direct = d
        return was

    @compat.set_ev_cls(compat.ofp_event.EventOFPPacketIn, compat.MAIN_DISPATCHER)
    def _phys_packet_in(self, ev: Any) -> None:
        """The hot path: one function, with what @loud does written inline."""
        msg = ev.msg
        try:
            roles = self._roles or self.roles
            if roles is None or not roles.admit(msg):
                return
            d = self.direct.get(msg.datapath.id)
            if d is None or d.dp is not msg.datapath:
                self._packet_in(msg)
                return
            ldp = d.ldp
            if ldp.id not in self.ready:
                return
            in_port = ofconv.in_port_of(msg.match)
            if in_port not in d.ports:
                LOG.warning("lime: packet-in from %#x port %s, which is no port of it: dropped",
                            ldp.id, in_port)
                return
            pins = self._pin_handlers if self._alone_at == len(_BRICKS) else \
                self._packet_in_handlers()
            if pins is not None:
                # The shim is the only app the platform gives packet-ins to, and the role
                # manager let this one through: the platform's message and event become the
                # logical ones (a copy and a new event per packet-in made the shim cost 8 % of
                # the learning app's throughput instead of 2-3 %).
                msg.datapath, msg.buffer_id = ldp, d.no_buffer
                ev.__class__ = lev.PACKET_IN
                lev_ = ev
            else:
                lmsg = _shallow(msg)  # another app takes the platform's: left as it is
                lmsg.datapath, lmsg.buffer_id = ldp, ldp.ofproto.OFP_NO_BUFFER
                lev_ = lev.event_for(lmsg)
                pins = self._handlers_of(lev_, compat.MAIN_DISPATCHER)
        except Exception:  # noqa: BLE001 -- logged loudly, then the platform drops it
            loud_failed(self, "_phys_packet_in")
            raise
        for name, handler in pins:
            try:  # (as _to_apps does: this is the event loop)
                handler(lev_)
            except Exception:  # noqa: BLE001 -- one app failing must not stop the others
                LOG.exception("%s in %s's handler for %s", MARKER, name, "packet-in")

    def _packet_in(self, msg: Any) -> None:
        pdp = msg.datapath
        ls = self.map.owner(pdp.id)
        if ls is None or ls.dpid not in self.ready:
            return
        inst = ls.instances[pdp.id]
        in_port = msg.match["in_port"]
        lport = inst.ins.get(in_port)
        if lport is None:
            LOG.warning("lime: packet-in from %#x port %d, which is no port of %#x: dropped",
                        pdp.id, in_port, ls.dpid)
            return
        if ls.migrating and not self.dedupe[ls.dpid].admit(time.monotonic(), pdp.id, lport,
                                                             msg.data):
            LOG.warning("lime: the same packet from two instances of %#x: reported once", ls.dpid)
            return
        serial, form = tr.serial_of(msg.cookie), tr.form_of(msg.cookie)
        held = self.phase_wait.get((ls.dpid, serial)) if form & tr.PHASE_ONE else None
        if held is not None:  # until every instance has the first half (see _two_phase)
            held[1].append((inst, msg, in_port, lport))
            return
        self._handle_packet_in(ls, inst, msg, in_port, lport, serial, form)

    def _handle_packet_in(self, ls: LogicalSwitch, inst: Instance, msg: Any, in_port: int,
                          lport: int, serial: Optional[int], form: int) -> None:
        pdp = msg.datapath
        table = self.tables[ls.dpid]
        entry = table.by_serial(serial) if serial is not None else None
        acts = entry.rule.actions if entry is not None else None
        if entry is not None and entry.rule.goto is not None and form & tr.FORM_MASK:
            acts = tr.pipeline_actions(table, _lookup_fields(msg, lport), entry.rule)
        forward, report = tr.packet_in_plan(form, acts)
        if form & tr.PHASE_ONE and entry is None:  # its rule is gone: by the current table
            forward = tr.without_controller(tr.pipeline_actions(
                table, _lookup_fields(msg, lport), start=getattr(msg, "table_id", 0) or 0))
        if forward is not None:
            self._send_plan(tr.packet_out_plan(ls, lport, forward, prefer=inst.dpid,
                                               came_in=in_port), msg.data)
        if not report:
            return
        ldp = self.ldps[ls.dpid]
        cookie = entry.rule.cookie if entry is not None else msg.cookie
        if lport == in_port and pdp.ofproto is ldp.ofproto:
            # The logical packet-in differs from the physical one only in its datapath, cookie
            # and buffer: a shallow copy (the match is the same) costs a fraction of a new one.
            lmsg = _shallow(msg)
            lmsg.datapath, lmsg.cookie, lmsg.buffer_id = ldp, cookie, ldp.ofproto.OFP_NO_BUFFER
            self._to_apps(lev.event_for(lmsg), compat.MAIN_DISPATCHER)
            return
        parser = ldp.ofproto_parser
        fields = dict(msg.match.items())
        fields["in_port"] = lport
        lmsg = parser.OFPPacketIn(ldp, buffer_id=ldp.ofproto.OFP_NO_BUFFER,
                                  total_len=len(msg.data), reason=msg.reason,
                                  table_id=msg.table_id, cookie=cookie,
                                  match=parser.OFPMatch(**fields), data=msg.data)
        lmsg.version, lmsg.msg_type, lmsg.xid = msg.version, msg.msg_type, msg.xid
        lmsg.msg_len = msg.msg_len  # the same fields, so the same length
        self._to_apps(lev.event_for(lmsg), compat.MAIN_DISPATCHER)

    def _send_plan(self, plan: Dict[int, Tuple[int, Tuple[Any, ...]]], data: bytes) -> None:
        """One PACKET_OUT per instance of a packet_out_plan."""
        for pdpid, (pin, acts) in plan.items():
            dp = self.phys.get(pdpid)
            if dp is not None:
                dp.send_msg(ofmsgs.packet_out(
                    dp, pin, ofconv.actions_to(dp.ofproto, dp.ofproto_parser, acts),
                    dp.ofproto.OFP_NO_BUFFER, data))

    @compat.set_ev_cls(compat.ofp_event.EventOFPBarrierReply, compat.MAIN_DISPATCHER)
    @loud
    def _barrier_reply(self, ev: Any) -> None:
        target = self.barriers.pop((ev.msg.datapath.id, ev.msg.xid), None)
        if target is None:
            return
        ldpid, xid = target
        if self.joins[ldpid].answer(xid, ev.msg.datapath.id) is None:
            return
        then = self.internal.pop((ldpid, xid), None)
        if then is not None:
            then(True)
            return
        ldp = self.ldps[ldpid]
        reply = ldp.ofproto_parser.OFPBarrierReply(ldp)
        reply.version, reply.msg_type, reply.xid = (ldp.ofproto.OFP_VERSION,
                                                    ldp.ofproto.OFPT_BARRIER_REPLY, xid)
        self._to_apps(lev.event_for(reply), compat.MAIN_DISPATCHER)

    @compat.set_ev_cls(compat.ofp_event.EventOFPFlowRemoved, compat.MAIN_DISPATCHER)
    @loud
    def _flow_removed(self, ev: Any) -> None:
        msg = ev.msg
        pdpid, ofp = msg.datapath.id, msg.datapath.ofproto
        serial = tr.serial_of(msg.cookie)
        ldpid = self.homes.get(pdpid)
        if ldpid is None:
            return
        if serial is None:
            self._app_rule_removed(ldpid, msg)
            return
        entry = self.tables[ldpid].by_serial(serial)
        if entry is not None and stats.same_copy(entry.rule, msg.table_id, msg.priority,
                                                 ofconv.match_from(msg.match)):
            self.counters[ldpid].flows.fold(serial, ofstats.removed_count(msg))
            self.counters_dirty = True
        ls = self.map.owner(pdpid)
        if ls is None or msg.reason == ofp.OFPRR_DELETE:
            return
        copies = self.copies.get((pdpid, serial), {})
        copies.pop((msg.table_id, msg.priority, ofconv.match_from(msg.match)), None)
        if any(self.copies.get((d, serial)) for d in ls.instances):
            return  # another copy of the rule (another input port) is still in use
        self._expired(ls, serial, msg.reason)

    def _app_rule_removed(self, ldpid: int, msg: Any) -> None:
        """A FLOW_REMOVED of a rule with the app's own cookie: a direct switch's (passed on), or
        one a switch sent just as it was adopted, before the shim's copy replaced the rule (it
        leaves the logical table too: the app is told it is gone)."""
        d = self.direct.get(ldpid)
        if d is None or d.dp is not msg.datapath:
            key = (msg.table_id, msg.priority, ofconv.match_from(msg.match))
            serial = self.adopted.get(ldpid, {}).pop(key, None)
            entry = self.tables[ldpid].by_serial(serial) if serial is not None else None
            if entry is None or entry.rule.cookie != msg.cookie:
                return
            self.tables[ldpid].remove(serial)
            self._delete_copies(self.map.logical(ldpid), serial)
            self.counters[ldpid].flows.forget(serial)
        lmsg = copy.copy(msg)
        lmsg.datapath = self.ldps[ldpid]
        self._to_apps(lev.event_for(lmsg), compat.MAIN_DISPATCHER)

    def _expired(self, ls: LogicalSwitch, serial: int, reason: int) -> None:
        """A rule timed out (the switch's timeout, or the shim's): gone everywhere; the app
        gets the FLOW_REMOVED it asked for, with what every copy ever counted."""
        entry = self.tables[ls.dpid].remove(serial)
        if entry is None:
            return
        self._delete_copies(ls, serial)
        flows = self.counters[ls.dpid].flows
        count = stats.total(flows, serial, {}, 2)
        flows.forget(serial)
        if entry.rule.flags & OFPFF_SEND_FLOW_REM:
            lmsg = ofstats.flow_removed(self.ldps[ls.dpid], entry.rule, reason,
                                        time.monotonic() - entry.added, count)
            self._to_apps(lev.event_for(lmsg), compat.MAIN_DISPATCHER)

    @compat.set_ev_cls(compat.ofp_event.EventOFPPortStatus, compat.MAIN_DISPATCHER)
    @loud
    def _port_status(self, ev: Any) -> None:
        msg = ev.msg
        ls = self.map.owner(msg.datapath.id)
        if ls is None or ls.dpid not in self.ready:
            return
        d = self.direct.get(ls.dpid)
        if d is not None and msg.reason == msg.datapath.ofproto.OFPPR_ADD:
            self._set_direct(ls, d.dp)  # a new port it hides: floods now need translating
        inst = ls.instances[msg.datapath.id]
        lport = inst.ins.get(msg.desc.port_no)
        if lport is None or inst.local(lport) != msg.desc.port_no:
            return
        ofp, desc = msg.datapath.ofproto, msg.desc
        up = not (msg.reason == ofp.OFPPR_DELETE or desc.state & ofp.OFPPS_LINK_DOWN
                  or desc.config & ofp.OFPPC_PORT_DOWN)
        if self.ports[ls.dpid].update(lport, inst.dpid, up) is not None:
            self.report_port(ls, lport, msg.reason, desc)

    def instance_ports_gone(self, ls: LogicalSwitch, pdpid: int) -> None:
        """A retired instance no longer holds its ports down: those up everywhere else are
        reported up. Decided in the event loop (see on_loop), after any PORT_STATUS queued."""
        def decide() -> None:
            ldp = self.ldps[ls.dpid]
            for lport, up in self.ports[ls.dpid].instance_gone(pdpid):
                desc = ldp.ports.get(lport)
                if desc is not None and up:
                    self.report_port(ls, lport, ldp.ofproto.OFPPR_MODIFY, desc)
        self.on_loop(decide)

    def report_port(self, ls: LogicalSwitch, lport: int, reason: int, desc: Any) -> None:
        ldp = self.ldps[ls.dpid]
        if hasattr(desc, "_replace"):  # OF1.3: a namedtuple
            ldesc = desc._replace(port_no=lport)
        else:
            ldesc = copy.copy(desc)
            ldesc.port_no = lport
        lmsg = ldp.ofproto_parser.OFPPortStatus(ldp, reason=reason, desc=ldesc)
        lmsg.version, lmsg.msg_type, lmsg.xid = (ldp.ofproto.OFP_VERSION,
                                                 ldp.ofproto.OFPT_PORT_STATUS, 0)
        self._to_apps(lev.event_for(lmsg), compat.MAIN_DISPATCHER)

    # -- from the apps ------------------------------------------------------------------------------
    def from_app(self, ldp: LogicalDatapath, msg: Any) -> bool:
        d = self.direct.get(ldp.id)  # (never one being adopted: adopt takes it out first)
        if d is not None:
            try:
                return self._direct(d, msg)
            except ValueError as e:
                LOG.error("lime: %s from an app to %#x refused: %s", type(msg).__name__, ldp.id, e)
                return False
        held = self.adopting.get(ldp.id)
        if held is not None:  # in order, after the switch is adopted (or back to direct)
            held.append((ldp, msg))
            return True
        return self._from_app(ldp, msg)

    def _from_app(self, ldp: LogicalDatapath, msg: Any) -> bool:
        ofp = ldp.ofproto
        try:
            if msg.msg_type is None:
                msg.msg_type = msg.cls_msg_type
            d = self.direct.get(ldp.id)
            if d is not None:
                return self._direct(d, msg)
            ls = self.map.logical(ldp.id)
            if msg.msg_type == ofp.OFPT_FLOW_MOD:
                self._flow_mod(ls, ofconv.flow_mod_from(msg), msg)
            elif msg.msg_type == ofp.OFPT_PACKET_OUT:
                self._app_packet_out(ls, msg)
            elif msg.msg_type == ofp.OFPT_BARRIER_REQUEST:
                self._barrier(ls, msg.xid)
            elif type(msg).__name__ in ofstats.KINDS:
                self._app_stats(ls, msg)
            else:
                LOG.error("lime: %s from an app to %#x is not translated yet: dropped",
                          type(msg).__name__, ldp.id)
                return False
        except (MappingError, ValueError) as e:
            LOG.error("lime: %s from an app to %#x refused: %s", type(msg).__name__, ldp.id, e)
            return False
        return True

    def _direct(self, d: Direct, msg: Any) -> bool:
        """An app's message to a direct switch: as it is, but for what the switch hides."""
        ofp, ldpid = d.ldp.ofproto, d.ldp.id
        t = msg.cls_msg_type
        if t == ofp.OFPT_FLOW_MOD:
            if _direct_as_is(d, msg):
                d.dp.send_msg(msg)
            else:
                d.dp.send_msg(self._direct_translated(d, msg))
        elif t == ofp.OFPT_PACKET_OUT:
            if _direct_out_as_is(d, msg):
                d.dp.send_msg(msg)
            else:
                self._app_packet_out(self.map.logical(ldpid), msg)
        elif t == ofp.OFPT_BARRIER_REQUEST:
            self._barrier(self.map.logical(ldpid), msg.xid)
        elif type(msg).__name__ in ofstats.KINDS:
            req = copy.copy(msg)  # numbered by the bridge's connection; answered with the app's
            req.xid = None
            self.passed[(d.dp.id, d.dp.set_xid(req))] = (ldpid, msg.xid)
            d.dp.send_msg(req)
        else:
            LOG.error("lime: %s from an app to %#x is not translated yet: dropped",
                      type(msg).__name__, ldpid)
            return False
        return True

    def _direct_translated(self, d: Direct, msg: Any) -> Any:
        """The app's FLOW_MOD with its apply-actions translated (a flood made outputs to the
        switch's ports; an output to a port it does not have dropped), as the full translation
        would; nothing else of it changes."""
        ls = self.map.logical(d.ldp.id)
        rule = ofconv.flow_mod_from(msg).rule
        in_lport = match_get(rule.match, "in_port")
        if in_lport is not None and in_lport not in d.ports:
            raise ValueError(f"it matches in_port {in_lport}, which is no port of the switch")
        acts, dropped = tr.translate_actions(ls, ls.instances[ls.dpid], rule.actions, in_lport)
        if dropped:
            LOG.info("lime: a rule of %#x outputs to port(s) %s it does not have: left out",
                     ls.dpid, list(dropped))
        out = copy.copy(msg)
        out.instructions = ofconv.instructions_to(d.dp.ofproto, d.dp.ofproto_parser,
                                                  rule.with_actions(acts))
        return out

    def adopt(self, ls: LogicalSwitch) -> None:
        """A direct switch taken over by the shim before an operation changes its map: its
        bridge's rules (the app's) read into the logical table and replaced in place by the
        shim's copies (same key: the counts carry over). Apps' messages meanwhile are held, then
        sent in order. Called from an operation's greenthread; ValueError if the rules were not
        read (the switch stays direct)."""
        d = self._direct_to(ls.dpid, None)
        if d is None:
            self.translated.add(ls.dpid)
            return
        self.adopting[ls.dpid] = []
        done = compat.hub.Event()
        taken: List[bool] = []

        def got(rows: Rows) -> None:
            taken.append(rows is not None and self._take_rules(ls, d, rows))
            done.set()
        xid = self._ask(ls.dpid, [d.dp.id], "rules", got)
        if not done.wait(timeout=LEAVING_WAIT_S):
            self.stats_wait.pop((ls.dpid, xid), None)
        if taken and taken[0]:
            return
        if self.phys.get(ls.dpid) is d.dp:  # (rebuilt: a port may have come while it waited)
            self._direct_to(ls.dpid, Direct(d.dp, d.ldp, d.ports))
        self._release(ls.dpid)
        raise ValueError(f"the rules of {ls.dpid:#x} could not be read: nothing changed")

    def _take_rules(self, ls: LogicalSwitch, d: Direct, rows: Dict[int, List[Any]]) -> bool:
        now = time.monotonic()
        table, lc = self.tables[ls.dpid], self.counters[ls.dpid]
        keys: Dict[Any, int] = {}
        for rule, age in ofstats.rule_rows(d.dp.ofproto, rows.get(d.dp.id, [])):
            if rule.cookie & tr.COOKIE_MASK == tr.COOKIE_MARK:
                continue  # the shim's own (none on a direct switch, unless a run before left it)
            for e in table.apply(FlowMod(OFPFC_ADD, rule), now - age).added:
                lc.rule_added(e.serial, e.rule)
                keys[e.rule.key] = e.serial
        self.adopted[ls.dpid] = keys
        self.translated.add(ls.dpid)
        self.save()
        LOG.info("lime: %#x adopted: %d rule(s) of its bridge in the logical table", ls.dpid,
                 len(keys))
        self.reinstall(ls)
        self._release(ls.dpid)
        return True

    def _release(self, ldpid: int) -> None:
        """The apps' messages held while a switch was adopted, in order (more may come while a
        send yields: they join the same queue)."""
        held = self.adopting.get(ldpid, [])
        while held:
            ldp, msg = held.pop(0)
            self._from_app(ldp, msg)
        self.adopting.pop(ldpid, None)

    def _flow_mod(self, ls: LogicalSwitch, fm: FlowMod, raw: Any = None) -> None:
        change = self.tables[ls.dpid].apply(fm, time.monotonic())
        if fm.command != OFPFC_ADD:
            raw = None  # the app's message is its own translation only for an ADD
        lc = self.counters[ls.dpid]
        for e in change.removed:
            self._delete_copies(ls, e.serial)
            lc.flows.forget(e.serial)
        for e in change.added:
            lc.rule_added(e.serial, e.rule)
            if ls.migrating:
                self._two_phase(ls, e.serial, e.rule)
            else:
                self._install(ls, e.serial, e.rule, added=e.added, raw=raw, force=raw is not None)

    def _install(self, ls: LogicalSwitch, serial: int, rule: Rule, only: Optional[int] = None,
                 phase_one: bool = False, added: Optional[float] = None, raw: Any = None,
                 force: bool = False) -> None:
        """Bring each instance's copies of the rule to the current translation: new or changed
        copies added (ADD replaces the same key in place), copies no longer produced deleted.
        Every copy asks for FLOW_REMOVED, so a deleted copy's counts are not lost; a switch gets
        what is left of the hard timeout of a rule added at `added`."""
        if added is not None and not ls.migrating and rule.hard_timeout:
            rule = replace(rule, hard_timeout=stats.hard_left(rule.hard_timeout, added,
                                                              time.monotonic()))
        for pdpid, inst in list(ls.instances.items()):  # a send may yield to a map change
            dp = self.phys.get(pdpid)
            if dp is None or (only is not None and pdpid != only) or pdpid not in ls.instances:
                continue
            rules, dropped = tr.translate(ls, inst, rule, serial, phase_one=phase_one,
                                          same=self._same(ls))
            rules = tuple(r if r.flags & OFPFF_SEND_FLOW_REM else
                          replace(r, flags=r.flags | OFPFF_SEND_FLOW_REM) for r in rules)
            if dropped:
                LOG.info("lime: rule %d of %#x: port(s) %s not reachable from %#x", serial,
                         ls.dpid, list(dropped), pdpid)
            adds, deletes = tr.sync(self.copies.get((pdpid, serial), {}), rules)
            if force:  # an app's ADD restarts the rule's timeouts and duration, even unchanged
                adds = list(rules)
            for r in adds:
                dp.send_msg(_as_sent(dp, r, rule, raw))
            for r in deletes:
                dp.send_msg(ofconv.flow_delete_strict(dp, r))
            self.copies[(pdpid, serial)] = {r.key: r for r in rules}

    def _delete_copies(self, ls: LogicalSwitch, serial: int) -> None:
        for pdpid in list(ls.instances):
            self.copies.pop((pdpid, serial), None)
            dp = self.phys.get(pdpid)
            if dp is not None:
                dp.send_msg(ofconv.flow_delete_cookie(dp, tr.shim_cookie(serial)))

    def _two_phase(self, ls: LogicalSwitch, serial: int, rule: Rule) -> None:
        """LIME sec. 4.1: the new match sending to the shim everywhere, a barrier everywhere, then
        the rule as it is then (a later change to it has had its own first half by then). The
        packets the first half sends the shim are held until then: forwarded at once by the new
        rule, a request could meet the new version while its answer, on an instance not yet at
        the first half, still met the old one (tests/integration/test_lime_stats).
        The barrier is not enough on Open vSwitch: it answers once its OpenFlow tables changed,
        but packets that hit a datapath flow cached from the old rule keep its actions until a
        revalidator redoes that flow, after the reply (experiments/barrier_lag.py measures how
        long). So the second half waits `settle_s` more."""
        key = (ls.dpid, serial)
        waits, held = self.phase_wait.get(key, (0, []))
        self.phase_wait[key] = (waits + 1, held)
        self._install(ls, serial, rule, phase_one=True)

        def second(ok: bool) -> None:
            waits, held = self.phase_wait.pop(key, (1, []))
            if waits > 1:  # a later update's first half is not confirmed yet: still held
                self.phase_wait[key] = (waits - 1, held)
            entry = self.tables[ls.dpid].by_serial(serial)
            try:
                if not ok:
                    LOG.warning("lime: rule %d of %#x stays in its first half (an instance went "
                                "away); the shim forwards its packets", serial, ls.dpid)
                elif entry is not None:
                    self._install(ls, serial, entry.rule, added=entry.added)
            finally:  # (a failed send must not hold the packets for good)
                if waits <= 1:
                    self._release_held(ls, serial, held)

        self.internal_barrier(ls, lambda ok: self.later(
            self.settle_s, functools.partial(second, True)) if ok else second(False))

    def _release_held(self, ls: LogicalSwitch, serial: int, held: List[Any]) -> None:
        """The packets a rule's first half raised, forwarded by the rule as it is now."""
        for inst, msg, in_port, lport in held:
            if self.map.switches.get(ls.dpid) is ls and inst.dpid in ls.instances:
                self._handle_packet_in(ls, ls.instances[inst.dpid], msg, in_port, lport,
                                       serial, tr.form_of(msg.cookie))

    def later(self, seconds: float, work: Callable[[], None]) -> None:
        """`work` in the shim's event loop `seconds` from now (at once if 0)."""
        if seconds <= 0:
            work()
        else:
            compat.hub.spawn_after(seconds, self.on_loop, work)

    def internal_barrier(self, ls: LogicalSwitch, then: Callable[[bool], None]) -> None:
        """A barrier on every instance of the switch; then(True) once all replied, then(False) if
        one of them went away first."""
        xid = self.ldps[ls.dpid].set_xid(_Xid())
        if any(d not in self.phys for d in ls.instances):
            then(False)
            return
        self.internal[(ls.dpid, xid)] = then
        self._barrier(ls, xid)

    def _barrier(self, ls: LogicalSwitch, xid: int) -> None:
        live = [d for d in ls.instances if d in self.phys]
        self.joins[ls.dpid].start(xid, live)
        for pdpid in live:
            dp = self.phys[pdpid]
            req = dp.ofproto_parser.OFPBarrierRequest(dp)
            self.barriers[(pdpid, dp.set_xid(req))] = (ls.dpid, xid)
            dp.send_msg(req)

    def _app_packet_out(self, ls: LogicalSwitch, msg: Any) -> None:
        ofp = msg.datapath.ofproto
        if msg.buffer_id != ofp.OFP_NO_BUFFER:
            raise ValueError("a PACKET_OUT of a switch buffer (the shim asks for whole packets)")
        match = getattr(msg, "match", None)  # OpenFlow 1.5 carries in_port in a match
        in_port = match["in_port"] if match is not None and "in_port" in match \
            else getattr(msg, "in_port", ofp.OFPP_CONTROLLER)
        same = self._same(ls)
        if same is not None and (in_port in same or in_port == ofp.OFPP_CONTROLLER) and all(
                a.port in tr.PASS_THROUGH or (a.port in same and a.port != in_port)
                for a in msg.actions if a.type == ofp.OFPAT_OUTPUT):
            dp = self.phys.get(ls.dpid)
            if dp is not None:
                dp.send_msg(msg)  # its own translation (as translate.as_is)
            return
        in_lport = in_port if in_port in ls.ports else None
        actions = ofconv.actions_from(ofp, msg.actions)
        self._send_plan(tr.packet_out_plan(ls, in_lport, actions), msg.data)

    def _same(self, ls: LogicalSwitch) -> Optional[FrozenSet[int]]:
        """translate.identical(ls), cached until the map changes."""
        if self.same_version != self.map.version:
            self.same_cache, self.same_version = {}, self.map.version
        if ls.dpid not in self.same_cache:
            self.same_cache[ls.dpid] = tr.identical(ls)
        return self.same_cache[ls.dpid]

    def reinstall(self, ls: LogicalSwitch, only: Optional[int] = None) -> None:
        """Every rule of the logical switch, brought to the current map's translation."""
        self._members_changed(ls)
        for pdpid, inst in ls.instances.items():
            dp = self.phys.get(pdpid)
            if dp is None or (only is not None and pdpid != only):
                continue
            ends = tr.tunnel_ends(ls, inst) + tr.relay_rules(inst)
            adds, deletes = tr.sync(self.ends.get(pdpid, {}), ends)
            for r in adds:
                dp.send_msg(ofconv.flow_add_to(dp, r))
            for r in deletes:  # a tunnel no longer used (a host moved, an instance left)
                dp.send_msg(ofconv.flow_delete_strict(dp, r))
            self.ends[pdpid] = {r.key: r for r in ends}
        table = self.tables[ls.dpid]
        for e in table.rules():
            if table.by_serial(e.serial) is not e:
                continue  # changed or gone while an earlier send yielded: already handled
            # a rule between its halves stays in its first half: its second half follows the
            # settle time (a reinstall must not cut it short)
            self._install(ls, e.serial, e.rule, only, added=e.added,
                          phase_one=(ls.dpid, e.serial) in self.phase_wait)

    def forget(self, pdpid: int) -> None:
        """What the shim believes a bridge holds, dropped: it lost its connection, or every rule
        the shim gave it is being deleted."""
        for key in [k for k in self.copies if k[0] == pdpid]:
            del self.copies[key]
        self.ends.pop(pdpid, None)

    def start(self) -> Any:
        started = super().start()
        self.loop = self.threads[-1]  # the event loop's greenthread (see _to_apps)
        return started

    def _to_apps(self, ev: Any, state: Any) -> None:
        """Each app's handlers called here, in the shim's event loop, rather than through the
        app's queue: one hop less per event (the shim would otherwise double the platform's
        dispatch cost), and every app still sees the shim's events one at a time, in order.
        Events raised elsewhere (operations, pollers) go through the shim's own queue first."""
        if eventlet.getcurrent() is not getattr(self, "loop", None):
            self.send_event(self.name, _OnLoop(functools.partial(self._to_apps, ev, state)))
            return
        for name, handler in self._handlers_of(ev, state):
            try:
                handler(ev)
            except Exception:  # noqa: BLE001 -- one app failing must not stop the others
                LOG.exception("%s in %s's handler for %s", MARKER, name, type(ev).__name__)

    def _packet_in_handlers(self) -> Optional[List[Tuple[str, Callable[[Any], None]]]]:
        """The apps' packet-in handlers if the shim is the only app the platform gives
        packet-ins to (the others take theirs from the shim), else None. Asked again when
        another app has loaded."""
        bricks = len(_BRICKS)
        if bricks != self._alone_at:
            source = compat.app_manager.lookup_service_brick("ofp_event")
            takers = source.observers.get(compat.ofp_event.EventOFPPacketIn, {}) if source else {}
            self._alone_at = bricks
            self._pin_handlers = self._handlers_of(_PIN_KEY, compat.MAIN_DISPATCHER) \
                if set(takers) <= {self.name} else None
            LOG.info("lime: packet-ins taken from the platform by %s", sorted(takers))
        return self._pin_handlers

    def _handlers_of(self, ev: Any, state: Any) -> List[Tuple[str, Callable[[Any], None]]]:
        """The apps' handlers for an event, looked up once per event class and state (apps
        register theirs as they load: the cache is refilled when one more has loaded)."""
        bricks = len(_BRICKS)
        if bricks != self._bricks:
            self._handlers, self._bricks = {}, bricks
        key = (ev.__class__, state)
        found = self._handlers.get(key)
        if found is None:
            found = []
            for name in self.get_observers(ev, state):
                brick = compat.app_manager.lookup_service_brick(name)
                if brick is not None:
                    found += [(name, h) for h in brick.get_handlers(ev, state)]
            self._handlers[key] = found
        return found

    def on_loop(self, work: Callable[[], None]) -> None:
        """`work` done in the shim's event loop, after the events already queued there: a
        decision that reads state those events change (a port's state, say) is not overtaken by
        them."""
        if eventlet.getcurrent() is getattr(self, "loop", None):
            work()
        else:
            self.send_event(self.name, _OnLoop(work))

    @compat.set_ev_cls(_OnLoop)
    @loud
    def _on_loop(self, ev: _OnLoop) -> None:
        ev.work()

    # -- statistics (LIME sec. 4.2) ------------------------------------------------------------------
    def _ask(self, ldpid: int, pdpids: List[int], kind: str, then: Callable[[Rows], None]) -> int:
        """One stats request (`ofstats.request` kind) per live instance; then(rows by instance)
        once all answered, then(None) if one went away first. The request's logical xid."""
        live = [d for d in pdpids if d in self.phys]
        if not live:
            then(None)
            return 0
        xid = self.ldps[ldpid].set_xid(_Xid())
        self.joins[ldpid].start(xid, live)
        self.stats_wait[(ldpid, xid)] = then
        for pdpid in live:
            dp = self.phys[pdpid]
            req = ofstats.request(dp, kind)
            self.requests[(pdpid, dp.set_xid(req))] = (ldpid, xid)
            dp.send_msg(req)
        return xid

    @compat.set_ev_cls([getattr(compat.ofp_event, n) for n in ofstats.REPLIES
                        if hasattr(compat.ofp_event, n)], compat.MAIN_DISPATCHER)
    @loud
    def _stats_reply(self, ev: Any) -> None:
        msg = ev.msg
        key = (msg.datapath.id, msg.xid)
        more = bool(msg.flags & msg.datapath.ofproto.OFPMPF_REPLY_MORE)
        passed = self.passed.get(key) if more else self.passed.pop(key, None)
        if passed is not None:
            self._pass_reply(*passed, msg)
            return
        target = self.requests.get(key) if more else self.requests.pop(key, None)
        if target is None:
            return
        ldpid, xid = target
        parts = self.joins[ldpid].answer(xid, msg.datapath.id, part=msg.body, more=more)
        then = self.stats_wait.pop((ldpid, xid), None) if parts is not None else None
        if then is not None:
            then({d: [row for body in bodies for row in body] for d, bodies in parts.items()})

    def _pass_reply(self, ldpid: int, xid: int, msg: Any) -> None:
        """A direct switch's answer to an app's request: the app's datapath and xid; ports the
        switch hides left out."""
        lmsg = copy.copy(msg)
        lmsg.datapath, lmsg.xid = self.ldps[ldpid], xid
        if isinstance(msg.body, list) and msg.body and hasattr(msg.body[0], "port_no"):
            ports = self.map.logical(ldpid).ports
            lmsg.body = [r for r in msg.body if r.port_no in ports]
        self._to_apps(lev.event_for(lmsg), compat.MAIN_DISPATCHER)

    @compat.set_ev_cls(compat.ofp_event.EventOFPErrorMsg, compat.MAIN_DISPATCHER)
    @loud
    def _error(self, ev: Any) -> None:
        """An ERROR answering a request: one of the shim's ends unanswered (an adoption or a
        timeouts poll would otherwise wait for ever); a direct switch's, for an app's request,
        goes to the app."""
        msg = ev.msg
        key = (msg.datapath.id, msg.xid)
        passed = self.passed.pop(key, None)
        if passed is not None:
            lmsg = copy.copy(msg)
            lmsg.datapath, lmsg.xid = self.ldps[passed[0]], passed[1]
            self._to_apps(lev.event_for(lmsg), compat.MAIN_DISPATCHER)
            return
        if key in self.requests:
            LOG.warning("lime: %#x answered a statistics request with error type %d code %d",
                        msg.datapath.id, msg.type, msg.code)
            self._request_ended(key)
            return
        if msg.datapath.id not in self.hidden:  # (a hidden bridge's app hears its own errors)
            # A rule or message the shim sent (its own, or an app's it translated) was refused:
            # the bridge lacks something the map says it has.
            LOG.error("lime: %#x refused a message (xid %#x): error type %d code %d",
                      msg.datapath.id, msg.xid, msg.type, msg.code)

    def _request_ended(self, key: Tuple[int, int]) -> None:
        ldpid, xid = self.requests.pop(key)
        self.joins[ldpid].pending.pop(xid, None)
        then = self.stats_wait.pop((ldpid, xid), None)
        if then is not None:
            then(None)

    def _requests_lost(self, pdpid: int) -> None:
        """A connection went: the stats requests waiting for it end unanswered."""
        for key in [k for k in self.passed if k[0] == pdpid]:
            del self.passed[key]
        for key in [k for k in self.requests if k[0] == pdpid]:
            self._request_ended(key)

    def _app_stats(self, ls: LogicalSwitch, msg: Any) -> None:
        kind = ofstats.KINDS[type(msg).__name__]

        def answer(rows: Rows) -> None:
            if rows is None:
                LOG.warning("lime: %s %#x of %#x not answered (an instance went away)",
                            type(msg).__name__, msg.xid, ls.dpid)
                return
            reply = getattr(self, f"_{kind}_reply")(ls, msg, rows)
            self._to_apps(lev.event_for(reply), compat.MAIN_DISPATCHER)
        self._ask(ls.dpid, list(ls.instances), kind, answer)

    def _flow_reply(self, ls: LogicalSwitch, msg: Any, rows: Dict[int, List[Any]]) -> Any:
        live = stats.flow_live({d: ofstats.flow_rows(body) for d, body in rows.items()})
        flows, now, want = self.counters[ls.dpid].flows, time.monotonic(), ofstats.filters(msg)
        out = [(e.rule, now - e.added, stats.total(flows, e.serial, live, 2))
               for e in self.tables[ls.dpid].rules() if stats.selects(e.rule, *want)]
        return ofstats.flow_reply(self.ldps[ls.dpid], msg, out)

    def _live_rows(self, ls: LogicalSwitch, rows: Dict[int, List[Any]]) -> Dict[int, List[Any]]:
        """Port and table rows of the instances whose counts are the switch's (not one that is
        joining before its baseline is taken, nor one that is leaving)."""
        return {d: body for d, body in rows.items() if (ls.dpid, d) not in self.unpolled}

    def _port_reply(self, ls: LogicalSwitch, msg: Any, rows: Dict[int, List[Any]]) -> Any:
        rows = self._live_rows(ls, rows)
        live = stats.port_live(ls.instances, {d: ofstats.port_rows(b) for d, b in rows.items()})
        ports, any_port = self.counters[ls.dpid].ports, self.ldps[ls.dpid].ofproto.OFPP_ANY
        out = []
        for lport in ls.ports:
            like = self._port_row(ls, lport, rows)
            if like is None or msg.port_no not in (any_port, lport):
                continue
            width = len(ofstats.port_fields([like]))
            out.append((lport, like, stats.total(ports, lport, live, width)))
        return ofstats.port_reply(self.ldps[ls.dpid], msg, out)

    @staticmethod
    def _port_row(ls: LogicalSwitch, lport: int, rows: Dict[int, List[Any]]) -> Any:
        """A physical row of the logical port to copy (durations, properties): the longest lived."""
        found = [r for d, body in rows.items() if d in ls.instances for r in body
                 if r.port_no == ls.instances[d].local(lport)]
        return max(found, key=lambda r: r.duration_sec, default=None)

    def _table_reply(self, ls: LogicalSwitch, msg: Any, rows: Dict[int, List[Any]]) -> Any:
        live = stats.live_by({d: ofstats.table_rows(b)
                              for d, b in self._live_rows(ls, rows).items()})
        tables = self.counters[ls.dpid].tables
        active: Dict[int, int] = {}
        for e in self.tables[ls.dpid].rules():
            active[e.rule.table_id] = active.get(e.rule.table_id, 0) + 1
        out = [(tid, active.get(tid, 0), stats.total(tables, tid, live, 2)) for tid in sorted(live)]
        return ofstats.table_reply(self.ldps[ls.dpid], msg, out)

    def _members_changed(self, ls: LogicalSwitch) -> None:
        """Instances gained or lost since the last reinstall: counts folded in or out."""
        before, now = self.members.get(ls.dpid), dict(ls.instances)
        self.members[ls.dpid] = now
        for pdpid in now:
            self.homes[pdpid] = ls.dpid
        if not ls.migrating:
            self.timeouts.pop(ls.dpid, None)  # the switch keeps them again
        if before is None:
            return  # first sight (or a restart): the counts go on from the saved offsets
        for pdpid in now.keys() - before.keys():
            self._fold_instance(ls.dpid, now[pdpid], -1)
        for pdpid in before.keys() - now.keys():
            self._fold_instance(ls.dpid, before[pdpid], 1)

    def _fold_instance(self, ldpid: int, inst: Instance, sign: int,
                       done: Optional[Callable[[], None]] = None) -> None:
        """An instance's port and table counts now, folded into the offsets (sign -1: a joining
        instance's baseline). Its rows are not live meanwhile; a joiner's are afterwards."""
        self.unpolled.add((ldpid, inst.dpid))
        waiting = {"port", "table"}

        def got(kind: str, rows: Rows) -> None:
            lc = self.counters[ldpid]
            if rows is None:
                LOG.warning("lime: %s counts of %#x (instance of %#x) not read: counters may "
                            "jump", kind, inst.dpid, ldpid)
            elif kind == "port":
                lc.fold_rows(lc.ports, stats.port_live(
                    {inst.dpid: inst}, {d: ofstats.port_rows(b) for d, b in rows.items()}), sign)
            else:
                lc.fold_rows(lc.tables, stats.live_by(
                    {d: ofstats.table_rows(b) for d, b in rows.items()}), sign)
            waiting.discard(kind)
            if not waiting:
                if sign < 0:
                    self.unpolled.discard((ldpid, inst.dpid))
                self.save_counters()
                if done is not None:
                    done()
        for kind in ("port", "table"):
            self._ask(ldpid, [inst.dpid], kind, lambda rows, kind=kind: got(kind, rows))

    def instance_leaving(self, ls: LogicalSwitch, pdpid: int) -> None:
        """Called (from an operation's greenthread, never a handler) just before an instance
        leaves the map: its last port and table counts become offsets, while it is still
        connected and quiet. Its rules' counts follow by FLOW_REMOVED when they are deleted.
        Without this call, `reinstall` does the same after the fact."""
        inst = ls.instance(pdpid)
        members = self.members.setdefault(ls.dpid, dict(ls.instances))
        members.pop(pdpid, None)  # so reinstall does not fold it a second time
        done = compat.hub.Event()
        self._fold_instance(ls.dpid, inst, 1, done.set)
        if not done.wait(timeout=LEAVING_WAIT_S):
            LOG.warning("lime: last counts of %#x not read in %.0f s", pdpid, LEAVING_WAIT_S)

    def _poll_loop(self) -> None:
        """Emulated timeouts of migrating switches; the counters saved when they changed."""
        while True:
            compat.hub.sleep(TIMEOUT_POLL_S)
            try:
                for ls in list(self.map):
                    asked = self.polling.get(ls.dpid)
                    if ls.migrating and ls.dpid in self.ready and (
                            asked is None or time.monotonic() - asked > LEAVING_WAIT_S):
                        # (a poll unanswered that long was lost: asked again)
                        self.polling[ls.dpid] = time.monotonic()
                        self._ask(ls.dpid, list(ls.instances), "flow",
                                  lambda rows, ls=ls: self._timeouts_poll(ls, rows))
                if self.counters_dirty:
                    self.save_counters()
            except Exception:  # noqa: BLE001 -- a dead poller would stop every emulated timeout
                LOG.exception("%s in the LIME timeout poller", MARKER)

    def _timeouts_poll(self, ls: LogicalSwitch, rows: Rows) -> None:
        self.polling.pop(ls.dpid, None)
        if rows is None or not ls.migrating or self.map.switches.get(ls.dpid) is not ls:
            return
        timeouts = self.timeouts.setdefault(ls.dpid, Timeouts())
        stats.track(timeouts, self.tables[ls.dpid].rules())
        live = stats.flow_live({d: ofstats.flow_rows(body) for d, body in rows.items()})
        flows = self.counters[ls.dpid].flows
        counts = {s: stats.total(flows, s, live, 2)[0] for s in timeouts.rules}
        for serial, reason in timeouts.poll(time.monotonic(), counts):
            LOG.info("lime: rule %d of %#x timed out by the shim (%s)", serial, ls.dpid,
                     "idle" if reason == 0 else "hard")
            self._expired(ls, serial, reason)

    def save_counters(self) -> None:
        self.counters_dirty = False
        doc = {str(d): lc.to_doc({e.serial: e.rule for e in self.tables[d].rules()})
               for d, lc in self.counters.items() if d in self.tables}
        try:
            self.redis.set(COUNTERS_KEY, json.dumps(doc))
        except redis.RedisError as e:
            self.counters_dirty = True
            LOG.error("lime: counters not saved: %s", e)

    # -- operations ---------------------------------------------------------------------------------
    def _listen_ops(self) -> None:
        serve(self.redis, OPS_CHANNEL, self._op, "LIME operations", LOG, compat.hub.sleep)

    def _op(self, raw: bytes) -> None:
        try:
            req = json.loads(raw)
            reply_to = req["reply"]
        except (ValueError, KeyError, TypeError):
            LOG.error("lime: malformed operation request %r: ignored", raw[:200])
            return
        try:
            answer = {"ok": True, **self.ops.run(req)}
        except (MappingError, ValueError, KeyError, TypeError) as e:
            answer = {"ok": False, "error": str(e)}
        self.redis.publish(reply_to, json.dumps(answer))

    def _load(self) -> None:
        """The map and the clone links of the previous run: a migration a crash interrupted can
        be finished (retire) or rolled back (retire the clone) after the restart. And the
        counters' offsets, so that what apps read does not go back."""
        try:
            raw = self.redis.get(COUNTERS_KEY)
            if raw is not None:
                self.counters = {int(k): stats.LogicalCounters.from_doc(v)
                                 for k, v in json.loads(raw).items()}
        except (redis.RedisError, ValueError, TypeError, AttributeError) as e:
            LOG.error("lime: saved counters not loaded (%s): counting from the switches", e)
            self.counters = {}
        try:
            raw = self.redis.get(MAP_KEY)
            if raw is None:
                return
            doc = json.loads(raw)
            self.map = Mapping.from_json(json.dumps(doc["map"]))
            self.links = {int(k): v for k, v in doc.get("links", {}).items()}
            self.translated = {int(d) for d in doc.get("translated", [])}
        except (redis.RedisError, ValueError, KeyError, TypeError, MappingError) as e:
            LOG.error("lime: saved map not loaded (%s): starting from the switches", e)
            self.map, self.links = Mapping(), {}
            return
        LOG.info("lime: map of the previous run loaded: %s", ", ".join(
            f"{ls.dpid:#x} on {sorted(hex(d) for d in ls.instances)}" for ls in self.map))

    def save(self) -> None:
        try:
            self.redis.set(MAP_KEY, json.dumps({"map": json.loads(self.map.to_json()),
                                                "links": self.links,
                                                "translated": sorted(self.translated)}))
        except redis.RedisError as e:
            LOG.error("lime: map not saved: %s", e)


def _features(ldp: LogicalDatapath) -> Any:
    """The SWITCH_FEATURES a platform app sees before the switch's MAIN state (Ryu's handshake),
    where apps such as Ryu's simple_switch_13 install their table-miss rule. No buffers: the
    shim reports whole packets."""
    ofp = ldp.ofproto
    msg = ldp.ofproto_parser.OFPSwitchFeatures(ldp, datapath_id=ldp.id, n_buffers=0,
                                               n_tables=254, auxiliary_id=0, capabilities=0)
    msg.version, msg.msg_type, msg.xid = ofp.OFP_VERSION, ofp.OFPT_FEATURES_REPLY, 0
    return msg


_DELETES = frozenset({OFPFC_DELETE, OFPFC_DELETE_STRICT})


def _direct_as_is(d: Direct, msg: Any) -> bool:
    """Does the FLOW_MOD mean the same on the bridge: no output to, nor match on, a port the
    switch does not have (nor a flood, when the bridge has a port the switch hides)?"""
    if msg.command in _DELETES:
        return True
    in_port = ofconv.in_port_of(msg.match)
    if in_port is not None and in_port not in d.ports:
        return False
    ok, output = d.out_ok, d.output
    for inst in msg.instructions:
        for a in getattr(inst, "actions", ()):
            if a.type == output and a.port not in ok:
                return False
    return True


def _direct_out_as_is(d: Direct, msg: Any) -> bool:
    """The same for a PACKET_OUT (from one of the switch's ports, or the controller), which
    must also not go back out of its own port."""
    in_port = getattr(msg, "in_port", None)
    if in_port is None:  # OpenFlow 1.5: in a match
        in_port = msg.match["in_port"] if "in_port" in msg.match else OFPP_CONTROLLER
    if msg.buffer_id != d.no_buffer:
        return False
    if in_port in d.ports:
        back = in_port
    elif in_port == OFPP_CONTROLLER:
        back = None  # nothing to leave out: CONTROLLER is a reserved port, allowed as one
    else:
        return False
    ok, output = d.out_ok, d.output
    for a in msg.actions:
        if a.type == output and (a.port not in ok or a.port == back):
            return False
    return True


_BRICKS = compat.app_manager.SERVICE_BRICKS  # (its length tells that another app has loaded)
_PIN_KEY = lev.PACKET_IN.__new__(lev.PACKET_IN)  # what _handlers_of looks packet-in handlers up by


def _shallow(msg: Any) -> Any:
    """copy.copy of a parsed message, without copy's generic protocol (a fifth of its cost)."""
    out = object.__new__(msg.__class__)
    out.__dict__.update(msg.__dict__)
    return out


def _as_sent(dp: Any, copy_: Rule, rule: Rule, raw: Any) -> Any:
    """The FLOW_MOD that installs a physical copy: the app's own ADD with the shim's cookie and
    flags when the copy is the rule itself (translate's short cut; building a new message and
    its match was a quarter of the shim's cost per packet-in), else a new one."""
    if (raw is None or copy_.match is not rule.match or copy_.actions is not rule.actions
            or copy_.hard_timeout != rule.hard_timeout or raw.datapath.ofproto is not dp.ofproto):
        return ofconv.flow_add_to(dp, copy_)
    msg = copy.copy(raw)
    msg.cookie, msg.flags, msg.buffer_id = copy_.cookie, copy_.flags, dp.ofproto.OFP_NO_BUFFER
    msg.xid = None
    return msg


class _Xid:
    """Something `set_xid` can number (an internal barrier has no message of its own)."""

    xid: int = 0

    def set_xid(self, xid: int) -> None:
        self.xid = xid


def _lookup_fields(msg: Any, lport: int) -> Dict[str, Any]:
    """A packet-in's header fields as a lookup in the logical table wants them."""
    fields = _packet_fields(msg.data)
    fields["in_port"] = lport
    return fields


def _packet_fields(data: bytes) -> Dict[str, Any]:
    """The header fields a lookup in the logical table needs (Ethernet, IPv4, ARP)."""
    fields: Dict[str, Any] = {}
    if len(data) < 14:
        return fields
    fields["eth_dst"] = data[0:6].hex(":")
    fields["eth_src"] = data[6:12].hex(":")
    eth_type = int.from_bytes(data[12:14], "big")
    fields["eth_type"] = eth_type
    if eth_type == 0x0800 and len(data) >= 34:
        fields["ip_proto"] = data[23]
        fields["ipv4_src"] = ".".join(str(b) for b in data[26:30])
        fields["ipv4_dst"] = ".".join(str(b) for b in data[30:34])
        fields["ip_dscp"] = data[15] >> 2
    return fields


