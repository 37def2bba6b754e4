"""The stateful L2 learning switch as a platform app (OpenFlow 1.3 and 1.5).

Load with `osken-manager ryu_apps.learning.app` (the role manager comes with it). Only the
confirmed MASTER of a switch answers its packet-ins. Answers are group-committed: the Redis writes
of every packet-in handled since the last commit go out in one pipeline, and only then are the
resulting FLOW_MODs and PACKET_OUTs sent. A commit happens when the app's event queue runs dry or
the batch is full, so at low load each packet-in is answered at once and under load one round trip
to Redis serves many.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Set, Tuple

import redis

from ryu_apps import config, ofmsgs, source
from ryu_apps.learning.core import Forward, LearningCore, Mac
from ryu_apps.kvs import StoreError, connect
from ryu_apps.learning.store import L2Store
from ryu_apps.loud import loud
from ryu_apps.roles.core import Role
from ryu_apps.roles.events import EventQuiesce, EventRelease, EventStateMoved, is_held
from sdnmig import compat

LOG = logging.getLogger("sdnmig.learning")
SAFETY_FLUSH_S = 0.05
FLOW_PRIORITY = 10


class LearningSwitch(compat.RyuApp):
    OFP_VERSIONS = list(compat.OFPROTOS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self.cfg = config.load()
            self.store = L2Store(connect(self.cfg.redis_host, self.cfg.redis_port,
                                         self.cfg.redis_password))
        except (config.ConfigError, StoreError) as e:
            raise SystemExit(f"sdnmig: {e}") from None
        self.core = LearningCore()
        self.writes: List[object] = []
        self.outbox: List[Tuple[Any, Any]] = []
        self.dirty: Set[int] = set()
        self.staged: Dict[int, Dict[Mac, int]] = {}  # read ahead of MASTER (EventStateMoved)
        self.flush_lock = compat.hub.BoundedSemaphore(1)
        self.threads.append(compat.hub.spawn(self._safety_flush))
        LOG.info("%s: learning app on Redis %s:%d, master of %s", self.cfg.instance_id,
                 self.cfg.redis_host, self.cfg.redis_port,
                 "every switch" if self.cfg.master_of is None
                 else sorted(self.cfg.master_of) or "no switch")

    @property
    def roles(self) -> Any:
        return compat.app_manager.lookup_service_brick(source.ROLES_BRICK)

    # -- events -------------------------------------------------------------------------------------
    @compat.set_ev_cls(source.EventRoleChanged)
    @loud
    def _role_changed(self, ev: Any) -> None:
        dp = ev.datapath
        if ev.role != Role.MASTER:
            self.core.forget_switch(dp.id)
            if ev.role == Role.SLAVE:
                self.staged.pop(dp.id, None)
            return
        self._reload(dp.id, self.staged.pop(dp.id, None))
        self.outbox.append((dp, ofmsgs.table_miss(dp, ofmsgs.LEARNING_COOKIE)))
        for msg in ev.released:
            self._answer(msg)
        self._flush_if_idle()

    @compat.set_ev_cls(EventStateMoved)
    @loud
    def _state_moved(self, ev: EventStateMoved) -> None:
        """Read a migrated-in state now, off the critical path of taking the switch over."""
        self.staged.pop(ev.dpid, None)
        if ev.present and not self.roles.is_master(ev.dpid):
            try:
                self.staged[ev.dpid] = self.store.load(ev.dpid)
            except redis.RedisError as e:  # only a head start: MASTER reads it again
                LOG.warning("%s: state of %#x not read ahead: %s", self.cfg.instance_id,
                            ev.dpid, e)

    @compat.set_ev_cls(EventRelease)
    @loud
    def _release(self, ev: EventRelease) -> None:
        """Packet-ins (and port changes) a migration buffered, now ours to handle, in order."""
        dp = ev.datapath
        if not self.roles.is_master(dp.id):
            LOG.warning("%s: %d released message(s) of %#x dropped: not MASTER",
                        self.cfg.instance_id, len(ev.msgs), dp.id)
            return
        for msg in ev.msgs:
            if msg.msg_type == dp.ofproto.OFPT_PORT_STATUS:
                self._port_changed(msg, " (held through a migration)")
            else:
                self._answer(msg)
        self._flush()

    @compat.set_ev_cls(EventQuiesce)
    @loud
    def _quiesce(self, ev: EventQuiesce) -> None:
        """Everything queued before this event is handled; make it durable and sent, then say so."""
        self._flush()
        ev.done()

    @compat.set_ev_cls(source.ofp_event.EventOFPPacketIn, compat.MAIN_DISPATCHER)
    @loud
    def _packet_in(self, ev: Any) -> None:
        if self.roles.admit(ev.msg):
            self._answer(ev.msg)
        self._flush_if_idle()

    @compat.set_ev_cls(source.ofp_event.EventOFPPortStatus, compat.MAIN_DISPATCHER)
    @loud
    def _port_status(self, ev: Any) -> None:
        if not is_held(ev.msg):  # a migration buffered it: it comes back through EventRelease
            self._port_changed(ev.msg)

    def _port_changed(self, msg: Any, how: str = "") -> None:
        dp, ofp, desc = msg.datapath, msg.datapath.ofproto, msg.desc
        down = (msg.reason == ofp.OFPPR_DELETE or desc.state & ofp.OFPPS_LINK_DOWN
                or desc.config & ofp.OFPPC_PORT_DOWN)
        if not down or not self.roles.is_master(dp.id):
            return
        writes = self.core.port_down(dp.id, desc.port_no)
        LOG.info("%s: port %d of %#x is down%s: forgetting %d host(s)", self.cfg.instance_id,
                 desc.port_no, dp.id, how, len(writes))
        self.writes.extend(writes)
        cookie = dict(cookie=ofmsgs.LEARNING_COOKIE, cookie_mask=ofmsgs.COOKIE_APP_MASK)
        self.outbox.append((dp, ofmsgs.flow_delete(dp, out_port=desc.port_no, **cookie)))
        self.outbox.append((dp, ofmsgs.flow_delete(
            dp, match=ofmsgs.in_port_match(dp, desc.port_no), **cookie)))
        self._flush()

    @compat.set_ev_cls(source.ofp_event.EventOFPStateChange, compat.DEAD_DISPATCHER)
    @loud
    def _switch_gone(self, ev: Any) -> None:
        if ev.datapath.id is not None:
            self._flush()
            self.core.forget_switch(ev.datapath.id)

    # -- answering ----------------------------------------------------------------------------------
    def _answer(self, msg: Any) -> None:
        dp = msg.datapath
        if dp.id in self.dirty or not self.core.known(dp.id):
            self._reload(dp.id)
        data = msg.data
        if len(data) < 14:
            LOG.warning("%s: %#x sent a %d-byte packet-in: not Ethernet, ignored",
                        self.cfg.instance_id, dp.id, len(data))
            return
        in_port = msg.match["in_port"]
        decision, writes = self.core.packet_in(dp.id, in_port, data[6:12], data[0:6])
        self.writes.extend(writes)
        if decision is not None:
            self._queue_answer(msg, in_port, decision)
        if len(self.outbox) >= self.cfg.commit_batch:
            self._flush()

    def _queue_answer(self, msg: Any, in_port: int, decision: Forward) -> None:
        dp = msg.datapath
        ofp = dp.ofproto
        port = ofp.OFPP_FLOOD if decision.port is None else decision.port
        actions = [ofmsgs.output(dp, port)]
        if decision.install and self.cfg.install_flows:
            data = msg.data
            match = ofmsgs.l2_match(dp, in_port, data[6:12], data[0:6])
            self.outbox.append((dp, ofmsgs.flow_add(
                dp, FLOW_PRIORITY, match, actions, cookie=ofmsgs.LEARNING_COOKIE,
                idle_timeout=self.cfg.flow_idle_timeout)))
        self.outbox.append((dp, ofmsgs.packet_out(dp, in_port, actions, msg.buffer_id, msg.data)))

    def _reload(self, dpid: int, staged: Optional[Dict[Mac, int]] = None) -> None:
        table = self.store.load(dpid) if staged is None else staged
        self.core.load(dpid, table)
        self.dirty.discard(dpid)
        LOG.info("%s: loaded %d host(s) of %#x from Redis%s", self.cfg.instance_id, len(table),
                 dpid, " (read when it migrated in)" if staged is not None else "")

    # -- group commit -------------------------------------------------------------------------------
    def _flush_if_idle(self) -> None:
        if source.idle(self):
            self._flush()

    def _flush(self) -> None:
        with self.flush_lock:
            writes, outbox = self.writes, self.outbox
            self.writes, self.outbox = [], []
            if not writes and not outbox:
                return
            try:
                self.store.commit(writes)
            except redis.RedisError as e:
                # Nothing of this batch is sent: the switch never acts on state Redis lacks.
                self.dirty.update(dp.id for dp, _ in outbox)
                self.dirty.update(getattr(w, "dpid") for w in writes)
                LOG.error("%s: Redis commit failed (%s): %d message(s) not sent",
                          self.cfg.instance_id, e, len(outbox))
                return
            for dp, msg in outbox:
                dp.send_msg(msg)

    def _safety_flush(self) -> None:
        while True:
            compat.hub.sleep(SAFETY_FLUSH_S)
            if self.writes or self.outbox:
                try:
                    self._flush()
                except Exception:  # noqa: BLE001 -- a dead greenlet would stop all flushing
                    LOG.exception("safety flush failed")

    def stats(self, dpid: int) -> dict:
        return self.store.stats(dpid)
