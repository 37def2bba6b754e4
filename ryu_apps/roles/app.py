"""Role manager: the thin platform adapter around `roles.core.RoleCore`, one core per switch.

Loaded automatically by any app that handles `roles.events.EventRoleChanged`. Other apps ask
`admit(msg)` before answering a packet-in, and are told of confirmed roles by that event.
Confirmed roles are also published in the instance's Redis (hash `ctl:roles`, dpid -> "ROLE gen"):
OVS refreshes the role column of its Controller table only every few seconds, so tools and tests
that need to know *now* read this instead.
"""
from __future__ import annotations

import logging
import struct
import time
from typing import Any, Callable, Dict, List, Optional

from ryu_apps import config, ofmsgs
from ryu_apps.kvs import ROLES_KEY, WANT_KEY, StoreError, connect
from ryu_apps.loud import MARKER, loud
from ryu_apps.roles.core import (Discard, Refused, Release, Role, RoleCore, SendRoleRequest,
                                 Settled)
from ryu_apps.roles.events import EventRoleChanged, EventRoleRefused, is_held
from sdnmig import compat

LOG = logging.getLogger("sdnmig.roles")
TICK_S = 0.25
BRICK_NAME = "sdnmig_roles"


class RoleManager(compat.RyuApp):
    OFP_VERSIONS = list(compat.OFPROTOS)
    _EVENTS = [EventRoleChanged, EventRoleRefused]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = BRICK_NAME
        try:
            self.cfg = config.load()
            self.redis = connect(self.cfg.redis_host, self.cfg.redis_port, self.cfg.redis_password)
        except (config.ConfigError, StoreError) as e:
            raise SystemExit(f"sdnmig: {e}") from None
        self.redis.delete(ROLES_KEY)  # a previous run's view is stale
        # Roles a migration gave this instance outrank the configured ones (they outlive restarts).
        self.wanted = {int(k, 16): Role[v.decode()] for k, v in self.redis.hgetall(WANT_KEY).items()}
        self.cores: Dict[int, RoleCore] = {}
        self.datapaths: Dict[int, Any] = {}
        self.discarded = 0
        self.role_hooks: List[Callable[[EventRoleChanged], None]] = []
        self.threads.append(compat.hub.spawn(self._ticker))

    # -- what other apps call -------------------------------------------------------------------
    def admit(self, msg: Any) -> bool:
        """True if this instance is confirmed MASTER of msg's switch and should answer it now."""
        if is_held(msg):
            return False  # a migration buffered it; it comes back through EventRelease
        return self._core(msg.datapath.id).packet_in(time.monotonic(), msg)

    def hook_role_changes(self, fn: Callable[[EventRoleChanged], None]) -> None:
        """Call fn(ev) in this app's own handler, right after each EventRoleChanged is queued.

        For a migration whose next message waits on the role (STATUS, END_MIGRATION): the hop
        through its event queue costs it the other apps' turns first (with the read-ahead moved
        behind STATE_ACK, Fixed ERC's median went from 14.8 to 13.4 ms, 300 runs each of
        `experiments/meta_migration.py --configs "fixed-low 10/90"`). fn should be quick (the
        ERC app publishes one message at most): while it waits, no role change of any switch is
        handled (an ERC `stall:` fault on END_MIGRATION stalls them all, as a stalled process
        would). What it raises is logged with the handler-failure marker and goes no further."""
        self.role_hooks.append(fn)

    def is_master(self, dpid: int) -> bool:
        core = self.cores.get(dpid)
        return bool(core and core.is_master)

    def set_role(self, dpid: int, role: Role, generation_id: Optional[int] = None,
                 fenced: bool = False, persist: bool = False) -> None:
        """Ask the switch for another role; with a generation_id, exactly that one (migrations).

        `persist` records MASTER/SLAVE as this instance's role for the switch across restarts.
        """
        if dpid not in self.datapaths:
            raise KeyError(f"switch {dpid:#x} is not connected to {self.cfg.instance_id}")
        if persist and role in (Role.MASTER, Role.SLAVE):
            self.persist(dpid, role)
        self._run(self.datapaths[dpid], self._core(dpid).set_want(
            time.monotonic(), role, generation_id, fenced))

    def persist(self, dpid: int, role: Role) -> None:
        """Record MASTER/SLAVE as this instance's role for the switch across restarts."""
        self.wanted[dpid] = role
        self.redis.hset(WANT_KEY, f"{dpid:016x}", role.name)

    def generation_id(self, dpid: int) -> Optional[int]:
        core = self.cores.get(dpid)
        return core.generation_id if core else None

    def roles(self) -> Dict[int, str]:
        return {dpid: (core.role.name if core.role is not None else "-") + f"/{core.state.value}"
                for dpid, core in self.cores.items()}

    # -- switch events ----------------------------------------------------------------------------
    @compat.set_ev_cls(compat.ofp_event.EventOFPStateChange,
                       [compat.MAIN_DISPATCHER, compat.DEAD_DISPATCHER])
    @loud
    def _state_change(self, ev: Any) -> None:
        dp, now = ev.datapath, time.monotonic()
        if dp.id is None:
            return
        if ev.state == compat.MAIN_DISPATCHER:
            self.datapaths[dp.id] = dp
            self._run(dp, self._core(dp.id).connected(now))
        elif self.datapaths.get(dp.id) is dp:
            del self.datapaths[dp.id]
            self.redis.hdel(ROLES_KEY, f"{dp.id:016x}")
            self._run(dp, self._core(dp.id).disconnected(now))

    @compat.set_ev_cls(compat.ofp_event.EventOFPRoleReply, compat.MAIN_DISPATCHER)
    @loud
    def _role_reply(self, ev: Any) -> None:
        msg = ev.msg
        self._run(msg.datapath, self._core(msg.datapath.id).role_reply(
            time.monotonic(), msg.xid, Role(msg.role), msg.generation_id))

    @compat.set_ev_cls(compat.ofp_event.EventOFPErrorMsg, compat.MAIN_DISPATCHER)
    @loud
    def _error(self, ev: Any) -> None:
        msg = ev.msg
        ofp = msg.datapath.ofproto
        if msg.type == ofp.OFPET_ROLE_REQUEST_FAILED:
            LOG.info("%s: role request %#x refused by %#x (code %d)", self.cfg.instance_id,
                     msg.xid, msg.datapath.id, msg.code)
            if msg.code == ofp.OFPRRFC_STALE:
                self._run(msg.datapath, self._core(msg.datapath.id).role_error_stale(
                    time.monotonic(), msg.xid))

    @compat.set_ev_cls(compat.ofp_event.EventOFPRoleStatus, compat.MAIN_DISPATCHER)
    @loud
    def _role_status(self, ev: Any) -> None:
        msg = ev.msg
        self._on_role_status(msg.datapath, msg.role, msg.generation_id)

    @compat.set_ev_cls(compat.ofp_event.EventOFPExperimenter, compat.MAIN_DISPATCHER)
    @loud
    def _experimenter(self, ev: Any) -> None:
        """OF1.3 has no ROLE_STATUS; OVS sends it as an ONF experimenter message (body !IB3xQ)."""
        msg = ev.msg
        if msg.experimenter == ofmsgs.ONF_EXPERIMENTER and msg.exp_type == ofmsgs.ONF_ET_ROLE_STATUS:
            role, _reason, gen = struct.unpack_from("!IB3xQ", bytes(msg.data))
            self._on_role_status(msg.datapath, role, gen)

    # -- internals --------------------------------------------------------------------------------
    def _on_role_status(self, dp: Any, role: int, gen: int) -> None:
        LOG.info("%s: switch %#x reports our role is now %s (gen %d)", self.cfg.instance_id,
                 dp.id, Role(role).name, gen)
        self._run(dp, self._core(dp.id).role_status(time.monotonic(), Role(role), gen))

    def _core(self, dpid: int) -> RoleCore:
        core = self.cores.get(dpid)
        if core is None:
            want = self.wanted.get(dpid) or (
                Role.MASTER if self.cfg.wants_master(dpid) else Role.SLAVE)
            core = self.cores[dpid] = RoleCore(want=want, timeout=self.cfg.role_timeout)
        return core

    def _run(self, dp: Any, actions: List[Any]) -> None:
        released: tuple = ()
        for action in actions:
            if isinstance(action, SendRoleRequest):
                dp.send_msg(ofmsgs.role_request(dp, int(action.role), action.generation_id,
                                                action.xid))
            elif isinstance(action, Release):
                # Held packet-ins of an older connection to this switch are stale: drop them.
                released = tuple(m for m in action.msgs if m.datapath is dp)
            elif isinstance(action, Refused):
                LOG.warning("%s: switch %#x refused %s with generation %d as stale (fenced)",
                            self.cfg.instance_id, dp.id, action.role.name, action.generation_id)
                self.send_event_to_observers(
                    EventRoleRefused(dp, int(action.role), action.generation_id))
            elif isinstance(action, Discard):
                self.discarded += action.count
                LOG.info("%s: %d held packet-in(s) of %#x left to the master: %s",
                         self.cfg.instance_id, action.count, dp.id, action.why)
        for action in actions:
            if isinstance(action, Settled):
                LOG.info("%s: role on %#x is %s (gen %d)", self.cfg.instance_id, dp.id,
                         action.role.name, action.generation_id)
                ev = EventRoleChanged(dp, int(action.role), action.generation_id, released,
                                      action.by_status)
                self.send_event_to_observers(ev)
                for hook in self.role_hooks:
                    try:
                        hook(ev)
                    except Exception:  # noqa: BLE001 -- the role change itself stands
                        self.handler_failures = getattr(self, "handler_failures", 0) + 1
                        LOG.exception("%s in role hook %s", MARKER, getattr(hook, "__name__", hook))
                self.redis.hset(ROLES_KEY, f"{dp.id:016x}",
                                f"{action.role.name} {action.generation_id}")

    def _ticker(self) -> None:
        while True:
            compat.hub.sleep(TICK_S)
            now = time.monotonic()
            for dpid, dp in list(self.datapaths.items()):
                actions = self.cores[dpid].tick(now)
                if actions:
                    LOG.warning("%s: no answer to role request on %#x, asking again",
                                self.cfg.instance_id, dpid)
                    self._run(dp, actions)
