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

Operations (clone, retire) arrive on the instance's own Redis, channel `lime:ops` (JSON), and are
answered on the channel the request names; see `ops()`.
"""
from __future__ import annotations

import copy
import json
import logging
import random
import time
from typing import Any, Dict, List, Optional, Set, Tuple

import redis

from lime_shim import lime_ofp_event as lev
from lime_shim import ofconv
from lime_shim import translate as tr
from lime_shim.mapping import Instance, Local, LogicalSwitch, Mapping, MappingError
from lime_shim.merge import Dedupe, Join, PortStates
from lime_shim.model import OFPP_CONTROLLER, Output, Rule, is_physical
from lime_shim.table import FlowMod, FlowTable
from ryu_apps import config
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
RETIRE_QUIET_S = 0.2  # how long a retired instance keeps its rules after the last path moved off


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
            self.redis = connect(self.cfg.redis_host, self.cfg.redis_port, self.cfg.redis_password)
        except (config.ConfigError, StoreError) as e:
            raise SystemExit(f"sdnmig: {e}") from None
        self.map = Mapping()
        self.tables: Dict[int, FlowTable] = {}
        self.ldps: Dict[int, LogicalDatapath] = {}
        self.phys: Dict[int, Any] = {}               # physical dpid -> connected datapath
        self.ready: Set[int] = set()                 # logical switches announced to the apps
        self.dedupe: Dict[int, Dedupe] = {}
        self.joins: Dict[int, Join] = {}
        self.ports: Dict[int, PortStates] = {}
        self.barriers: Dict[Tuple[int, int], Tuple[int, int]] = {}  # (pdpid, xid) -> (ldpid, xid)
        self.two_phase: Dict[int, Set[int]] = {}     # ldpid -> serials whose phase 1 is in place
        self.busy: Set[int] = set()                  # logical switches in an operation
        self.internal: Dict[Tuple[int, int], Any] = {}  # (ldpid, xid) -> run when all replied
        self.threads.append(compat.hub.spawn(self._listen_ops))

    # -- what apps call (as they would call the role manager) ---------------------------------------
    def admit(self, msg: Any) -> bool:
        return msg.datapath.id in self.ready

    def is_master(self, dpid: int) -> bool:
        return dpid in self.ready

    @property
    def roles(self) -> Any:
        return compat.app_manager.lookup_service_brick(PHYS_ROLES_BRICK)

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
        ls = self.map.owner(dp.id)
        if ls is not None and ls.dpid in self.ready:
            LOG.warning("lime: instance %#x of logical switch %#x is gone: the switch is down",
                        dp.id, ls.dpid)
            self.ready.discard(ls.dpid)
            for xid in self.joins[ls.dpid].instance_lost(dp.id):
                LOG.warning("lime: barrier %#x of %#x not answered (switch down)", xid, ls.dpid)
            self._to_apps(lev.EventOFPStateChange(self.ldps[ls.dpid]), compat.DEAD_DISPATCHER)

    @compat.set_ev_cls(PhysRoleChanged)
    @loud
    def _role_changed(self, ev: Any) -> None:
        dp = ev.datapath
        if ev.role != Role.MASTER or dp.id in self.spares:
            return
        ls = self.map.owner(dp.id)
        if ls is None:
            ls = self.map.add_switch(dp.id, tuple(sorted(p for p in dp.ports if is_physical(p))))
            self.tables[ls.dpid] = FlowTable()
            self.dedupe[ls.dpid], self.joins[ls.dpid] = Dedupe(), Join()
            self.ports[ls.dpid] = PortStates()
            self.ldps[ls.dpid] = LogicalDatapath(self, ls.dpid, dp)
        ldp = self.ldps[ls.dpid]
        ldp.ports = {p: desc for p, desc in dp.ports.items() if p in ls.ports}
        if ls.dpid in self.ready:
            return
        if any(self.roles is None or not self.roles.is_master(d) for d in ls.instances):
            return
        self.ready.add(ls.dpid)
        LOG.info("lime: logical switch %#x ready on %s", ls.dpid,
                 ", ".join(f"{d:#x}" for d in ls.instances))
        self._reinstall(ls)
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
        serial = tr.serial_of(msg.cookie)
        entry = table.by_serial(serial) if serial is not None else None
        if serial is not None and serial in self.two_phase.get(ls.dpid, ()):
            self._forward(ls, inst, msg, lport, self._by_table(table, msg, lport))
            return
        if entry is not None and ls.migrating and OFPP_CONTROLLER in entry.rule.outputs() \
                and tr.controller_only(entry.rule.actions) != entry.rule.actions:
            self._forward(ls, inst, msg, lport, tuple(
                a for a in entry.rule.actions
                if not (isinstance(a, Output) and a.port == OFPP_CONTROLLER)))
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
        """The actions the apps' current rules give this packet (the shim forwards it itself)."""
        fields = _packet_fields(msg.data)
        fields["in_port"] = lport
        acts: Tuple[Any, ...] = ()
        for e in table.lookup(fields):
            acts += e.rule.actions
        return tuple(a for a in acts if not (isinstance(a, Output) and a.port == OFPP_CONTROLLER))

    def _forward(self, ls: LogicalSwitch, inst: Instance, msg: Any, lport: int,
                 actions: Tuple[Any, ...]) -> None:
        for pdpid, (in_port, acts) in tr.packet_out_plan(ls, lport, actions, prefer=inst.dpid).items():
            dp = self.phys.get(pdpid)
            if dp is not None:
                dp.send_msg(_packet_out(dp, in_port, ofconv.actions_to(dp.ofproto,
                                                                      dp.ofproto_parser, acts),
                                        msg.data))

    @compat.set_ev_cls(compat.ofp_event.EventOFPBarrierReply, compat.MAIN_DISPATCHER)
    @loud
    def _barrier_reply(self, ev: Any) -> None:
        key = (ev.msg.datapath.id, ev.msg.xid)
        target = self.barriers.pop(key, None)
        if target is None:
            return
        ldpid, xid = target
        done = self.joins[ldpid].answer(xid, ev.msg.datapath.id)
        if done is None:
            return
        callback = self.internal.pop((ldpid, xid), None)
        if callback is not None:
            callback()
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
        ofp = msg.datapath.ofproto
        ls = self.map.owner(msg.datapath.id)
        serial = tr.serial_of(msg.cookie)
        if ls is None or serial is None or msg.reason == ofp.OFPRR_DELETE:
            return
        entry = self.tables[ls.dpid].remove(serial)
        if entry is None:
            return
        self._delete_copies(ls, serial)  # the other copies (other instances, per-input splits)
        if not entry.rule.flags & ofp.OFPFF_SEND_FLOW_REM:
            return
        ldp = self.ldps[ls.dpid]
        parser = ldp.ofproto_parser
        r = entry.rule
        lmsg = parser.OFPFlowRemoved(ldp, cookie=r.cookie, priority=r.priority, reason=msg.reason,
                                     table_id=r.table_id, duration_sec=msg.duration_sec,
                                     duration_nsec=msg.duration_nsec,
                                     idle_timeout=r.idle_timeout, hard_timeout=r.hard_timeout,
                                     packet_count=msg.packet_count, byte_count=msg.byte_count,
                                     match=ofconv.match_to(parser, r.match))
        lmsg.version, lmsg.msg_type, lmsg.xid = msg.version, msg.msg_type, msg.xid
        self._to_apps(lev.event_for(lmsg), compat.MAIN_DISPATCHER)

    @compat.set_ev_cls(compat.ofp_event.EventOFPPortStatus, compat.MAIN_DISPATCHER)
    @loud
    def _port_status(self, ev: Any) -> None:
        msg = ev.msg
        ofp = msg.datapath.ofproto
        ls = self.map.owner(msg.datapath.id)
        if ls is None or ls.dpid not in self.ready:
            return
        inst = ls.instances[msg.datapath.id]
        lport = next((lp for lp, pl in inst.out.items()
                      if isinstance(pl, Local) and pl.port == msg.desc.port_no), None)
        if lport is None:
            return
        desc = msg.desc
        up = not (msg.reason == ofp.OFPPR_DELETE or desc.state & ofp.OFPPS_LINK_DOWN
                  or desc.config & ofp.OFPPC_PORT_DOWN)
        change = self.ports[ls.dpid].update(lport, inst.dpid, up)
        if change is None:
            return
        ldp = self.ldps[ls.dpid]
        if hasattr(desc, "_replace"):  # OF1.3: a namedtuple
            ldesc = desc._replace(port_no=lport)
        else:
            ldesc = copy.copy(desc)
            ldesc.port_no = lport
        lmsg = ldp.ofproto_parser.OFPPortStatus(ldp, reason=msg.reason, desc=ldesc)
        lmsg.version, lmsg.msg_type, lmsg.xid = msg.version, msg.msg_type, msg.xid
        self._to_apps(lev.event_for(lmsg), compat.MAIN_DISPATCHER)

    # -- from the apps ------------------------------------------------------------------------------
    def from_app(self, ldp: LogicalDatapath, msg: Any) -> bool:
        ofp = ldp.ofproto
        ls = self.map.logical(ldp.id)
        try:
            if msg.msg_type is None:
                msg.msg_type = msg.cls_msg_type
            if msg.msg_type == ofp.OFPT_FLOW_MOD:
                fm = ofconv.flow_mod_from(msg)
                self._flow_mod(ls, fm)
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

    def _install(self, ls: LogicalSwitch, serial: int, rule: Rule,
                 only: Optional[int] = None) -> None:
        for pdpid, inst in ls.instances.items():
            dp = self.phys.get(pdpid)
            if dp is None or (only is not None and pdpid != only):
                continue
            rules, dropped = tr.translate(ls, inst, rule, tr.shim_cookie(serial))
            if dropped:
                LOG.info("lime: rule %d on %#x: port(s) %s not reachable from %#x", serial,
                         ls.dpid, list(dropped), pdpid)
            for r in rules:
                dp.send_msg(ofconv.flow_add_to(dp, r))

    def _delete_copies(self, ls: LogicalSwitch, serial: int) -> None:
        for pdpid in ls.instances:
            dp = self.phys.get(pdpid)
            if dp is not None:
                dp.send_msg(ofconv.flow_delete_cookie(dp, tr.shim_cookie(serial)))

    def _two_phase(self, ls: LogicalSwitch, serial: int, rule: Rule) -> None:
        """LIME sec. 4.1: the new match sending to the shim everywhere, a barrier everywhere, then
        the real rule; meanwhile the shim forwards what the new match catches by the new rules."""
        self.two_phase.setdefault(ls.dpid, set()).add(serial)
        self._install(ls, serial, tr.phase_one(rule))

        def second() -> None:
            entry = self.tables[ls.dpid].by_serial(serial)
            self.two_phase[ls.dpid].discard(serial)
            if entry is not None:
                self._install(ls, serial, entry.rule)
        self._internal_barrier(ls, second)

    def _internal_barrier(self, ls: LogicalSwitch, then: Any) -> None:
        xid = self.ldps[ls.dpid].set_xid(_Xid())
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
        in_port = msg.match["in_port"] if hasattr(msg, "match") and msg.match is not None \
            and "in_port" in msg.match else getattr(msg, "in_port", ofp.OFPP_CONTROLLER)
        in_lport = in_port if in_port in ls.ports else None
        actions = ofconv.actions_from(ofp, msg.actions)
        for pdpid, (pin, acts) in tr.packet_out_plan(ls, in_lport, actions).items():
            dp = self.phys.get(pdpid)
            if dp is not None:
                dp.send_msg(_packet_out(dp, pin, ofconv.actions_to(dp.ofproto, dp.ofproto_parser,
                                                                   acts), msg.data))

    def _reinstall(self, ls: LogicalSwitch, only: Optional[int] = None) -> None:
        """Every rule of the logical switch, translated for the current map (ADD replaces)."""
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
            result = self.ops(req)
            answer = {"ok": True, **result}
        except (MappingError, ValueError, KeyError, TypeError) as e:
            answer = {"ok": False, "error": str(e)}
        self.redis.publish(reply_to, json.dumps(answer))

    def ops(self, req: Dict[str, Any]) -> Dict[str, Any]:
        """`clone`: {switch, onto, ports: {lport: onto's port}, neighbours: [[ndpid, nport
        (logical, toward switch), nport on the neighbour toward onto]]}; `retire`: {switch,
        instance}; `status`: {}."""
        op = req.get("op")
        if op == "status":
            return {"switches": {f"{ls.dpid:#x}": sorted(f"{d:#x}" for d in ls.instances)
                                 for ls in self.map}}
        dpid = int(req["switch"])
        ls = self.map.logical(dpid)
        if dpid in self.busy:
            raise ValueError(f"logical switch {dpid:#x} is already being migrated")
        if op == "clone":
            return self._clone(ls, int(req["onto"]), {int(k): int(v) for k, v in req["ports"].items()},
                               [tuple(int(x) for x in n) for n in req.get("neighbours", [])])
        if op == "retire":
            return self._retire(ls, int(req["instance"]),
                                [tuple(int(x) for x in n) for n in req.get("neighbours", [])])
        raise ValueError(f"unknown operation {op!r}")

    def _clone(self, ls: LogicalSwitch, onto: int, ports: Dict[int, int],
               neighbours: List[Tuple[int, ...]]) -> Dict[str, Any]:
        if onto not in self.phys:
            raise ValueError(f"clone target {onto:#x} is not connected")
        if onto not in self.spares:
            raise ValueError(f"clone target {onto:#x} is not a spare (lime_spares)")
        if self.roles is None or not self.roles.is_master(onto):
            raise ValueError(f"clone target {onto:#x} is not ours yet (no MASTER role)")
        if sorted(ports) != sorted(ls.ports):
            raise ValueError(f"the port map must name every port of {ls.dpid:#x}: {list(ls.ports)}")
        checked = []
        for ndpid, nport, nnew in neighbours:
            n = self.map.logical(ndpid)
            if len(n.instances) != 1 or nport not in n.ports or ndpid not in self.phys:
                raise ValueError(f"neighbour {ndpid:#x} port {nport} cannot be rewired")
            checked.append((n, nport, nnew))
        inst = Instance(onto, {lp: Local(pp) for lp, pp in ports.items()},
                        {pp: lp for lp, pp in ports.items()})
        started = time.monotonic()
        self.busy.add(ls.dpid)
        try:
            self.map.add_instance(ls.dpid, inst)
            self._reinstall(ls)  # the clone gets every rule; the original its migration form
            done = compat.hub.Event()
            self._internal_barrier(ls, done.set)
            done.wait(timeout=5)
            for n, nport, nnew in checked:  # make before break: input first, then output
                ninst = n.instances[n.dpid]
                ninst.ins[nnew] = nport
                self.map.set_instance(n.dpid, ninst)
                self._reinstall(n)
                ninst.out[nport] = Local(nnew)
                self.map.set_instance(n.dpid, ninst)
                self._reinstall(n)
            self._save()
        finally:
            self.busy.discard(ls.dpid)
        return {"switch": ls.dpid, "instances": sorted(ls.instances),
                "ms": round((time.monotonic() - started) * 1000, 1)}

    def _retire(self, ls: LogicalSwitch, pdpid: int, neighbours: List[Tuple[int, ...]]
                ) -> Dict[str, Any]:
        ls.instance(pdpid)
        started = time.monotonic()
        self.busy.add(ls.dpid)
        try:
            compat.hub.sleep(RETIRE_QUIET_S)  # packets already inside the old instance get out
            self.map.remove_instance(ls.dpid, pdpid)
            dp = self.phys.get(pdpid)
            if dp is not None:
                dp.send_msg(ofconv.flow_delete_cookie_all(dp))
            self._reinstall(ls)  # back to the one-instance form (timeouts kept by the switch)
            for ndpid, nport, nold in neighbours:
                n = self.map.logical(ndpid)
                ninst = n.instances[n.dpid]
                if ninst.ins.get(nold) == nport and ninst.out.get(nport) != Local(nold):
                    del ninst.ins[nold]
                    self.map.set_instance(n.dpid, ninst)
                    ndp = self.phys.get(n.dpid)
                    if ndp is not None:
                        ndp.send_msg(ofconv.flow_delete_in_port(ndp, nold))
            self._save()
        finally:
            self.busy.discard(ls.dpid)
        return {"switch": ls.dpid, "instances": sorted(ls.instances),
                "ms": round((time.monotonic() - started) * 1000, 1)}

    def _save(self) -> None:
        try:
            self.redis.set(MAP_KEY, self.map.to_json())
        except redis.RedisError as e:
            LOG.error("lime: map not saved: %s", e)


class _Xid:
    """Something `set_xid` can number (an internal barrier has no message of its own)."""

    xid: int = 0

    def set_xid(self, xid: int) -> None:
        self.xid = xid


def _packet_out(dp: Any, in_port: int, actions: List[Any], data: bytes) -> Any:
    ofp, parser = dp.ofproto, dp.ofproto_parser
    if ofp.OFP_VERSION >= compat.ofproto_v1_5.OFP_VERSION:
        return parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER,
                                   match=parser.OFPMatch(in_port=in_port), actions=actions,
                                   data=data)
    return parser.OFPPacketOut(dp, buffer_id=ofp.OFP_NO_BUFFER, in_port=in_port, actions=actions,
                               data=data)


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


