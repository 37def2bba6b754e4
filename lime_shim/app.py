"""The LIME shim as a platform app: the thin adapter around the pure cores of this package.

Below it, the platform's OpenFlow connections to physical bridges (their mastership negotiated by
the role manager, as for every app of the suite). Above it, apps that take their events from
`lime_shim.lime_ofp_event`: to them each logical switch is one datapath (`LogicalDatapath`)
whose `send_msg` comes here. What the shim does with each message:

| from an app (logical)  | to the instances (physical)                                        |
|------------------------|--------------------------------------------------------------------|
| FLOW_MOD               | applied to the logical table; each changed rule translated per     |
|                        | instance (translate.py); while migrating in two phases: to-shim   |
|                        | rule, barrier on every instance, then the real rule                |
| PACKET_OUT             | split by where each output port is (translate.packet_out_plan)    |
| BARRIER_REQUEST        | one per instance; one reply, after all (merge.Join)               |
| anything else          | refused with a log line (not translated yet)                       |

| from an instance       | to the apps                                                        |
|------------------------|--------------------------------------------------------------------|
| PACKET_IN              | logical in_port, merged (merge.Dedupe); a packet a to-shim rule    |
|                        | raised is forwarded by the shim with the new rules, not reported   |
| FLOW_REMOVED (expiry)  | removed from the logical table; reported if the app asked          |
| PORT_STATUS            | reported once per logical change (merge.PortStates)               |
| connection lost        | the logical switch goes DEAD (an instance failing is the switch)   |

Operations (clone, retire, status) arrive on the instance's own Redis, channel `lime:ops` (JSON),
and are answered on the channel the request names; `operations.py` carries them out.
"""
from __future__ import annotations

import copy
import json
import logging
import random
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import redis

from lime_shim import lime_ofp_event as lev
from lime_shim import ofconv
from lime_shim import translate as tr
from lime_shim.mapping import LogicalSwitch, Mapping, MappingError
from lime_shim.operations import Operations
from lime_shim.merge import Dedupe, Join, PortStates
from lime_shim.model import Rule, is_physical
from lime_shim.table import FlowMod, FlowTable
from ryu_apps import config, ofmsgs
from ryu_apps.kvs import StoreError, connect
from ryu_apps.loud import MARKER, loud
from ryu_apps.roles.app import BRICK_NAME as PHYS_ROLES_BRICK
from ryu_apps.roles.core import Role
from ryu_apps.roles.events import EventRoleChanged as PhysRoleChanged
from sdnmig import compat

LOG = logging.getLogger("sdnmig.lime")
BRICK_NAME = "lime_shim"
OPS_CHANNEL = "lime:ops"
MAP_KEY = "lime:map"


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

    def set_xid(self, msg: Any) -> int:
        self.xid = (self.xid + 1) & self.ofproto.MAX_XID
        msg.set_xid(self.xid)
        return self.xid

    def send_msg(self, msg: Any, close_socket: bool = False) -> bool:
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
            self.redis = connect(self.cfg.redis_host, self.cfg.redis_port, self.cfg.redis_password)
        except (config.ConfigError, StoreError) as e:
            raise SystemExit(f"sdnmig: {e}") from None
        self.map = Mapping()
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
        self.barriers: Dict[Tuple[int, int], Tuple[int, int]] = {}  # (pdpid, xid) -> (ldpid, xid)
        self.internal: Dict[Tuple[int, int], Callable[[bool], None]] = {}  # run when all replied
        self.busy: Set[int] = set()                  # logical switches in an operation
        self._load()
        self.ops = Operations(self)
        self.threads.append(compat.hub.spawn(self._listen_ops))

    # -- what apps call (as they would call the role manager) ---------------------------------------
    def admit(self, msg: Any) -> bool:
        return msg.datapath.id in self.ready

    def is_master(self, dpid: int) -> bool:
        return dpid in self.ready

    @property
    def roles(self) -> Any:
        return compat.app_manager.lookup_service_brick(PHYS_ROLES_BRICK)

    def _ensure(self, ls: LogicalSwitch, like: Any) -> None:
        if ls.dpid not in self.tables:
            self.tables[ls.dpid] = FlowTable()
            self.dedupe[ls.dpid], self.joins[ls.dpid] = Dedupe(), Join()
            self.ports[ls.dpid] = PortStates()
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
        for key in [k for k in self.copies if k[0] == dp.id]:
            del self.copies[key]  # re-sent in full when it is back
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
            self.synced[dp.id] = dp
            dp.send_msg(ofconv.flow_delete_cookie_all(dp))
            self.reinstall(ls, only=dp.id)
        if ls.dpid in self.ready:
            return
        if any(d not in self.phys or self.roles is None or not self.roles.is_master(d)
               for d in ls.instances):
            return
        self.ready.add(ls.dpid)
        LOG.info("lime: logical switch %#x ready on %s", ls.dpid,
                 ", ".join(f"{d:#x}" for d in ls.instances))
        self._to_apps(lev.EventOFPStateChange(ldp), compat.MAIN_DISPATCHER)
        self._to_apps(lev.EventRoleChanged(ldp, Role.MASTER, 0, ()), None)
        for msg in ev.released:
            self._packet_in(msg)

    @compat.set_ev_cls(compat.ofp_event.EventOFPPacketIn, compat.MAIN_DISPATCHER)
    @loud
    def _phys_packet_in(self, ev: Any) -> None:
        roles = self.roles
        if roles is not None and roles.admit(ev.msg):
            self._packet_in(ev.msg)

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
        if not self.dedupe[ls.dpid].admit(time.monotonic(), pdp.id, lport, msg.data):
            LOG.warning("lime: the same packet from two instances of %#x: reported once", ls.dpid)
            return
        table = self.tables[ls.dpid]
        serial, form = tr.serial_of(msg.cookie), tr.form_of(msg.cookie)
        entry = table.by_serial(serial) if serial is not None else None
        forward, report = tr.packet_in_plan(form, entry.rule.actions if entry else None)
        if form & tr.PHASE_ONE and entry is None:  # its rule is gone: by the current table
            forward = tr.without_controller(self._by_table(table, msg, lport))
        if forward is not None:
            self._send_plan(tr.packet_out_plan(ls, lport, forward, prefer=inst.dpid,
                                               came_in=in_port), msg.data)
        if not report:
            return
        ldp = self.ldps[ls.dpid]
        parser = ldp.ofproto_parser
        fields = dict(msg.match.items())
        fields["in_port"] = lport
        cookie = entry.rule.cookie if entry is not None else msg.cookie
        lmsg = parser.OFPPacketIn(ldp, buffer_id=ldp.ofproto.OFP_NO_BUFFER,
                                  total_len=len(msg.data), reason=msg.reason,
                                  table_id=msg.table_id, cookie=cookie,
                                  match=parser.OFPMatch(**fields), data=msg.data)
        lmsg.version, lmsg.msg_type, lmsg.xid = msg.version, msg.msg_type, msg.xid
        self._to_apps(lev.event_for(lmsg), compat.MAIN_DISPATCHER)

    def _by_table(self, table: FlowTable, msg: Any, lport: int) -> Tuple[Any, ...]:
        """The rule that raised a packet-in is gone: the apps' current rules, by lookup."""
        fields = _packet_fields(msg.data)
        fields["in_port"] = lport
        acts: Tuple[Any, ...] = ()
        for e in table.lookup(fields):
            acts += e.rule.actions
        return acts

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
        ls = self.map.owner(pdpid)
        serial = tr.serial_of(msg.cookie)
        if ls is None or serial is None or msg.reason == ofp.OFPRR_DELETE:
            return
        copies = self.copies.get((pdpid, serial), {})
        copies.pop((msg.table_id, msg.priority, ofconv.match_from(msg.match)), None)
        if any(self.copies.get((d, serial)) for d in ls.instances):
            return  # another copy of the rule (another input port) is still in use
        entry = self.tables[ls.dpid].remove(serial)
        if entry is None:
            return
        self._delete_copies(ls, serial)
        if entry.rule.flags & ofp.OFPFF_SEND_FLOW_REM:
            lmsg = ofconv.flow_removed_to(self.ldps[ls.dpid], entry.rule, msg)
            self._to_apps(lev.event_for(lmsg), compat.MAIN_DISPATCHER)

    @compat.set_ev_cls(compat.ofp_event.EventOFPPortStatus, compat.MAIN_DISPATCHER)
    @loud
    def _port_status(self, ev: Any) -> None:
        msg = ev.msg
        ls = self.map.owner(msg.datapath.id)
        if ls is None or ls.dpid not in self.ready:
            return
        inst = ls.instances[msg.datapath.id]
        lport = inst.ins.get(msg.desc.port_no)
        if lport is None or inst.local(lport) != msg.desc.port_no:
            return
        ofp, desc = msg.datapath.ofproto, msg.desc
        up = not (msg.reason == ofp.OFPPR_DELETE or desc.state & ofp.OFPPS_LINK_DOWN
                  or desc.config & ofp.OFPPC_PORT_DOWN)
        if self.ports[ls.dpid].update(lport, inst.dpid, up) is not None:
            self.report_port(ls, lport, msg.reason, desc)

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
        ofp = ldp.ofproto
        try:
            ls = self.map.logical(ldp.id)
            if msg.msg_type is None:
                msg.msg_type = msg.cls_msg_type
            if msg.msg_type == ofp.OFPT_FLOW_MOD:
                self._flow_mod(ls, ofconv.flow_mod_from(msg))
            elif msg.msg_type == ofp.OFPT_PACKET_OUT:
                self._app_packet_out(ls, msg)
            elif msg.msg_type == ofp.OFPT_BARRIER_REQUEST:
                self._barrier(ls, msg.xid)
            else:
                LOG.error("lime: %s from an app to %#x is not translated yet: dropped",
                          type(msg).__name__, ldp.id)
                return False
        except (MappingError, ValueError) as e:
            LOG.error("lime: %s from an app to %#x refused: %s", type(msg).__name__, ldp.id, e)
            return False
        return True

    def _flow_mod(self, ls: LogicalSwitch, fm: FlowMod) -> None:
        change = self.tables[ls.dpid].apply(fm, time.monotonic())
        for e in change.removed:
            self._delete_copies(ls, e.serial)
        for e in change.added:
            if ls.migrating:
                self._two_phase(ls, e.serial, e.rule)
            else:
                self._install(ls, e.serial, e.rule)

    def _install(self, ls: LogicalSwitch, serial: int, rule: Rule, only: Optional[int] = None,
                 phase_one: bool = False) -> None:
        """Bring each instance's copies of the rule to the current translation: new or changed
        copies added (ADD replaces the same key in place), copies no longer produced deleted."""
        for pdpid, inst in ls.instances.items():
            dp = self.phys.get(pdpid)
            if dp is None or (only is not None and pdpid != only):
                continue
            rules, dropped = tr.translate(ls, inst, rule, serial, phase_one=phase_one)
            if dropped:
                LOG.info("lime: rule %d of %#x: port(s) %s not reachable from %#x", serial,
                         ls.dpid, list(dropped), pdpid)
            adds, deletes = tr.sync(self.copies.get((pdpid, serial), {}), rules)
            for r in adds:
                dp.send_msg(ofconv.flow_add_to(dp, r))
            for r in deletes:
                dp.send_msg(ofconv.flow_delete_strict(dp, r))
            self.copies[(pdpid, serial)] = {r.key: r for r in rules}

    def _delete_copies(self, ls: LogicalSwitch, serial: int) -> None:
        for pdpid in ls.instances:
            self.copies.pop((pdpid, serial), None)
            dp = self.phys.get(pdpid)
            if dp is not None:
                dp.send_msg(ofconv.flow_delete_cookie(dp, tr.shim_cookie(serial)))

    def _two_phase(self, ls: LogicalSwitch, serial: int, rule: Rule) -> None:
        """LIME sec. 4.1: the new match sending to the shim everywhere, a barrier everywhere, then
        the rule as it is then (a later change to it has had its own first half by then)."""
        self._install(ls, serial, rule, phase_one=True)

        def second(ok: bool) -> None:
            entry = self.tables[ls.dpid].by_serial(serial)
            if not ok:
                LOG.warning("lime: rule %d of %#x stays in its first half (an instance went "
                            "away); the shim forwards its packets", serial, ls.dpid)
            elif entry is not None:
                self._install(ls, serial, entry.rule)
        self.internal_barrier(ls, second)

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
        in_lport = in_port if in_port in ls.ports else None
        actions = ofconv.actions_from(ofp, msg.actions)
        self._send_plan(tr.packet_out_plan(ls, in_lport, actions), msg.data)

    def reinstall(self, ls: LogicalSwitch, only: Optional[int] = None) -> None:
        """Every rule of the logical switch, brought to the current map's translation."""
        for pdpid, inst in ls.instances.items():
            dp = self.phys.get(pdpid)
            if dp is None or (only is not None and pdpid != only):
                continue
            for r in tr.tunnel_ends(ls, inst):
                dp.send_msg(ofconv.flow_add_to(dp, r))
        for e in self.tables[ls.dpid].rules():
            self._install(ls, e.serial, e.rule, only)

    def _to_apps(self, ev: Any, state: Any) -> None:
        self.send_event_to_observers(ev, state)

    # -- operations ---------------------------------------------------------------------------------
    def _listen_ops(self) -> None:
        while True:
            try:
                ps = self.redis.pubsub(ignore_subscribe_messages=True)
                ps.subscribe(OPS_CHANNEL)
                for m in ps.listen():
                    self._op(m["data"])
            except redis.RedisError as e:
                LOG.error("lime: operations channel lost (%s); again in 1 s", e)
                compat.hub.sleep(1.0)
            except Exception:  # noqa: BLE001 -- a dead listener would stop every operation
                LOG.exception("%s in the LIME operations listener", MARKER)

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
        be finished (retire) or rolled back (retire the clone) after the restart."""
        try:
            raw = self.redis.get(MAP_KEY)
            if raw is None:
                return
            doc = json.loads(raw)
            self.map = Mapping.from_json(json.dumps(doc["map"]))
            self.links = {int(k): v for k, v in doc.get("links", {}).items()}
        except (redis.RedisError, ValueError, KeyError, TypeError, MappingError) as e:
            LOG.error("lime: saved map not loaded (%s): starting from the switches", e)
            self.map, self.links = Mapping(), {}
            return
        LOG.info("lime: map of the previous run loaded: %s", ", ".join(
            f"{ls.dpid:#x} on {sorted(hex(d) for d in ls.instances)}" for ls in self.map))

    def save(self) -> None:
        try:
            self.redis.set(MAP_KEY, json.dumps({"map": json.loads(self.map.to_json()),
                                                "links": self.links}))
        except redis.RedisError as e:
            LOG.error("lime: map not saved: %s", e)


class _Xid:
    """Something `set_xid` can number (an internal barrier has no message of its own)."""

    xid: int = 0

    def set_xid(self, xid: int) -> None:
        self.xid = xid


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


