"""ERC / Meta-Migration as a platform app: the thin adapter around `erc.core`.

Load it beside the learning app (`osken-manager ryu_apps.learning.app ryu_apps.erc.app`); the
role manager comes with it. It needs the deployment's bus ([sdnmig] bus_host/bus_port).

Three kinds of work reach the cores, each in its own greenthread, and every action they return
is carried out by one worker greenthread, in order (except a Release, and the Sends just before
one, which go at once: see `_enqueue`):
- the switch stream, in wire order: packet-ins, PORT_STATUS and marker FLOW_REMOVEDs are seen by
  handlers running inside the connection's receive loop (`compat.register_sync_handler`), which
  decide at arrival whether a message is buffered (then marked held, so the learning app skips
  it);
- role changes, inside the role manager's own handler (`RoleManager.hook_role_changes`), and
  messages from the bus (peers and operators);
- a ticker: deadlines, and whether the peers that matter still hold their bus subscription (a
  crashed process loses it at once; a stalled one keeps it and meets a deadline instead).
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import redis

from ryu_apps import config, ofmsgs
from ryu_apps.erc import core as erc
from ryu_apps.erc import snapshot, wire
from ryu_apps.kvs import StoreError, connect, open_client
from ryu_apps.loud import MARKER, loud
from ryu_apps.roles.app import BRICK_NAME as ROLES_BRICK
from ryu_apps.roles.core import Role
from ryu_apps.roles.events import (EventQuiesce, EventRelease, EventRoleChanged, EventRoleRefused,
                                   EventStateMoved, mark_held)
from sdnmig import compat

LOG = logging.getLogger("sdnmig.erc")
TICK_S = 0.02
LIVENESS_S = 0.05
REGISTER_S = 1.0
INCOMING_KEY = "ctl:incoming"  # dpids whose state was restored here for a migration not yet won

Core = Union[erc.InitiatorCore, erc.CandidateCore]

# Compare-and-delete: release a key only if it still holds our value.
_CAS_DEL = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_HCAS_DEL = ("if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then "
             "return redis.call('hdel', KEYS[1], ARGV[1]) end return 0")


class ErcMigrator(compat.RyuApp):
    OFP_VERSIONS = list(compat.OFPROTOS)
    _EVENTS = [EventRelease, EventQuiesce, EventStateMoved]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.name = "sdnmig_erc"
        try:
            self.cfg = config.load()
            if not self.cfg.bus_port:
                raise config.ConfigError("[sdnmig] bus_port is not set: the ERC app needs the "
                                         "deployment's bus (sdnmig controllers start sets it)")
            self.redis = connect(self.cfg.redis_host, self.cfg.redis_port, self.cfg.redis_password)
        except (config.ConfigError, StoreError) as e:
            raise SystemExit(f"sdnmig: {e}") from None
        self.me = self.cfg.instance_id
        # Connected lazily: the bus may be reachable only once the network is up (controllers in
        # namespaces reach it over the management switch); the listener retries until it is.
        self.bus = open_client(self.cfg.bus_host, self.cfg.bus_port, self.cfg.bus_password,
                               socket_timeout=5, socket_connect_timeout=2)
        self.initiating: Dict[int, erc.InitiatorCore] = {}
        self.joining: Dict[int, erc.CandidateCore] = {}
        self.replies: Dict[str, Tuple[str, str]] = {}  # mig -> (reply channel, request id)
        self.started: Dict[str, float] = {}
        self.work: Any = compat.hub.Queue()
        self.faults = _parse_faults(self.cfg.fault)
        self.sent: Dict[str, int] = {}
        # One publish at a time: greenthreads take different pooled bus connections, and one that
        # must first open its connection lets a later message overtake it (a DRAINED seen before
        # its END_MIGRATION lost the end mark: test_stalled_candidate_loses_the_race, 1 CI run).
        self.send_lock = compat.hub.BoundedSemaphore(1)
        self.mig_counter = int.from_bytes(os.urandom(2), "big")
        self._cas_del = self.bus.register_script(_CAS_DEL)
        self._hcas_del = self.bus.register_script(_HCAS_DEL)
        self._cpu = (time.monotonic(), sum(os.times()[:2]))
        self._cleanup_orphans()
        for fn in (self._worker, self._listen, self._ticker, self._register):
            self.threads.append(compat.hub.spawn(fn))
        LOG.info("%s: ERC migrator on bus %s:%d", self.me, self.cfg.bus_host, self.cfg.bus_port)

    def start(self) -> Any:
        t = super().start()
        compat.register_sync_handler(compat.ofp_event.EventOFPPacketIn, self._sync_held)
        compat.register_sync_handler(compat.ofp_event.EventOFPPortStatus, self._sync_held)
        compat.register_sync_handler(compat.ofp_event.EventOFPFlowRemoved, self._sync_flow_removed)
        self.roles.hook_role_changes(self._role_changed_now)
        return t

    @property
    def roles(self) -> Any:
        return compat.app_manager.lookup_service_brick(ROLES_BRICK)

    # -- the switch stream, in wire order ---------------------------------------------------------
    def _sync_held(self, ev: Any) -> None:
        """A packet-in, or a port change (the apps' state changes with it: a port gone down takes
        its hosts along), is buffered like one from the freeze point or the candidate's marker."""
        try:
            msg = ev.msg
            core = self._core(msg.datapath.id)
            if core is not None and core.packet_in(time.monotonic(), msg):
                mark_held(msg)
        except Exception:  # noqa: BLE001 -- raising here would kill the switch connection
            LOG.exception("%s in the packet-in/port-status stream hook", MARKER)

    def _sync_flow_removed(self, ev: Any) -> None:
        try:
            msg = ev.msg
            tag = ofmsgs.marker_tag(msg.cookie)
            if tag is None:
                return
            dpid = msg.datapath.id
            core = self._core(dpid)
            if core is None:
                return
            actions = core.marker_seen(time.monotonic(), tag)
            if any(isinstance(a, erc.TakeSnapshot) for a in actions):
                # Queued to the apps right behind every packet-in before the marker.
                self._quiesce(dpid, lambda: self.work.put(lambda: self._snapshot(dpid)))
            rest = [a for a in actions if not isinstance(a, erc.TakeSnapshot)]
            if rest:
                self._enqueue(dpid, core, rest)
        except Exception:  # noqa: BLE001
            LOG.exception("%s in the flow-removed stream hook", MARKER)

    def _core(self, dpid: int) -> Optional[Core]:
        core = self.initiating.get(dpid)
        if core is not None and not core.finished:
            return core
        cand = self.joining.get(dpid)
        return cand if cand is not None and cand.live else None

    def _winner(self, dpid: int, now: float) -> Optional[erc.CandidateCore]:
        """A candidate that won and finished but may still be demoted by a retake."""
        cand = self.joining.get(dpid)
        return cand if cand is not None and cand.lingering(now) else None

    # -- role manager events ----------------------------------------------------------------------
    def _role_changed_now(self, ev: EventRoleChanged) -> None:
        """Called by the role manager itself (see RoleManager.hook_role_changes), not queued."""
        dpid, role, now = ev.datapath.id, Role(ev.role), time.monotonic()
        core: Optional[Core] = self._core(dpid)
        if core is None and ev.by_status:
            core = self._winner(dpid, now)
        if core is not None:
            if ev.by_status:
                actions = core.role_status(now, role, ev.generation_id)
            else:
                actions = core.role_confirmed(now, role, ev.generation_id)
            self._enqueue(dpid, core, actions)

    @compat.set_ev_cls(EventRoleChanged)
    @loud
    def _role_changed(self, ev: EventRoleChanged) -> None:
        """The migration has had this change already (_role_changed_now); the bus learns it here."""
        self._publish_master(ev.datapath.id, Role(ev.role))

    @compat.set_ev_cls(EventRoleRefused)
    @loud
    def _role_refused(self, ev: EventRoleRefused) -> None:
        dpid = ev.datapath.id
        core = self._core(dpid)
        if core is not None:
            actions = core.role_refused(time.monotonic())
            self._enqueue(dpid, core, actions)

    # -- the bus ----------------------------------------------------------------------------------
    def _listen(self) -> None:
        while True:
            try:
                ps = self.bus.pubsub(ignore_subscribe_messages=True)
                ps.subscribe(wire.channel(self.me), wire.data_channel(self.me))
                for item in ps.listen():
                    if item.get("type") == "message":
                        self._on_bus(item["data"])
            except redis.AuthenticationError as e:
                LOG.error("%s: the bus at %s:%d refused the password (%s): check "
                          "[sdnmig] bus_password_file", self.me, self.cfg.bus_host,
                          self.cfg.bus_port, e)
                compat.hub.sleep(2.0)
            except redis.RedisError as e:
                LOG.error("%s: bus %s:%d unreachable (%s); retrying", self.me, self.cfg.bus_host,
                          self.cfg.bus_port, e)
                compat.hub.sleep(0.5)

    def _on_bus(self, data: bytes) -> None:
        try:
            msg = wire.decode(data)
        except wire.WireError as e:
            LOG.warning("%s: malformed bus message dropped: %s", self.me, e)
            return
        try:
            self._dispatch(msg)
        except Exception:  # noqa: BLE001 -- one bad message must not stop the listener
            LOG.exception("%s handling %s from %s", MARKER, msg.type, msg.src)

    def _dispatch(self, msg: wire.Msg) -> None:
        fault = self.faults.get("in:" + msg.type)
        if fault is not None:  # testing only: handle this incoming message late
            LOG.warning("%s: fault injection: holding %s from %s for %.1f s", self.me, msg.type,
                        msg.src, fault[1])
            compat.hub.spawn_after(fault[1], self._dispatch_now, msg)
            return
        self._dispatch_now(msg)

    def _dispatch_now(self, msg: wire.Msg) -> None:
        now = time.monotonic()
        if msg.type == wire.OP_MIGRATE:
            self.work.put(lambda: self._op_migrate(msg))
        elif msg.type == wire.OP_CANCEL:
            self.work.put(lambda: self._op_cancel(msg))
        elif msg.type == wire.START:
            # The candidate core exists from now on, so a ROLLBACK right behind START finds it.
            self._on_start(msg)
        elif msg.type in (wire.STATUS, wire.REFUSE, wire.STATE_ACK, wire.END_MIGRATION,
                          wire.DRAINED):
            core = self.initiating.get(msg.dpid)
            if core is not None and core.mig == msg.mig:
                actions = core.on_peer(now, msg)
                self._enqueue(msg.dpid, core, actions)
        elif msg.type in (wire.STATE, wire.COMMIT, wire.ROLLBACK, wire.END_QUERY):
            cand = self.joining.get(msg.dpid)
            if cand is not None and cand.mig == msg.mig:
                actions = cand.on_peer(now, msg)
                self._enqueue(msg.dpid, cand, actions)
            else:
                answer = erc.answer_stray(msg, self.roles.is_master(msg.dpid))
                if answer is not None:
                    self.work.put(lambda: self._send(msg.dpid, msg.mig, answer.to, answer.type,
                                                     answer.body))

    def _send(self, dpid: int, mig: str, to: str, kind: str, body: Dict[str, Any],
              payload: bytes = b"") -> None:
        n = self.sent[kind] = self.sent.get(kind, 0) + 1
        fault = self.faults.get(kind)
        if fault is not None:
            what, arg = fault
            if what == "drop" and n == arg:
                LOG.warning("%s: fault injection: %s #%d to %s dropped", self.me, kind, n, to)
                return
            if what == "stall":
                LOG.warning("%s: fault injection: stalling %s to %s for %.1f s", self.me, kind,
                            to, arg)
                compat.hub.sleep(arg)
        data = memoryview(wire.encode(wire.Msg(kind, mig, dpid, self.me, body, payload, n)))
        with self.send_lock:  # in the order the sends were made (see __init__)
            self.bus.publish(wire.channel_for(to, payload), data)  # a view: see snapshot.parse

    # -- operations -------------------------------------------------------------------------------
    def _op_migrate(self, req: wire.Msg) -> None:
        reply = str(req.body.get("reply") or "")
        try:
            core = self._begin(req)
        except erc.MigrationError as e:
            LOG.warning("%s: migration of %#x refused: %s", self.me, req.dpid, e)
            self._reply(reply, req.mig, {"ok": False, "error": str(e), "record": None})
            return
        if reply:
            self.replies[core.mig] = (reply, req.mig)

    def _begin(self, req: wire.Msg) -> erc.InitiatorCore:
        b, dpid = req.body, req.dpid
        roles = self.roles
        if dpid not in roles.datapaths:
            raise erc.MigrationError(f"switch {dpid:#x} is not connected to {self.me}")
        if not roles.is_master(dpid):
            raise erc.MigrationError(f"{self.me} is not MASTER of switch {dpid:#x}")
        if self._core(dpid) is not None:
            raise erc.MigrationError(f"switch {dpid:#x} is already migrating")
        mode, commit = b.get("mode", "meta"), b.get("commit", "phase2")
        transfer, timeout = b.get("transfer", "copy"), b.get("timeout_s", 10.0)
        if mode not in wire.MODES:
            raise erc.MigrationError(f"mode must be one of {', '.join(wire.MODES)}")
        if not isinstance(timeout, (int, float)) or not 0 < timeout <= 3600:
            raise erc.MigrationError("timeout_s must be a number of seconds in (0, 3600]")
        cands = self._candidates(b.get("to") or [], b.get("auto"))
        if mode == "fixed" and len(cands) != 1:
            raise erc.MigrationError("a Fixed migration has exactly one destination")
        self.mig_counter = (self.mig_counter + 1) & 0xFFFFFF
        mig = f"{self.me}-{dpid:x}-{uuid.uuid4().hex[:8]}"
        core = erc.InitiatorCore(mig, dpid, self.me, cands, commit=commit, transfer=transfer,
                                 timeout=float(timeout),
                                 candidate_timeout=float(timeout) + 2.0,
                                 tag_base=self.mig_counter << 8)
        if not self.bus.set(wire.lock_key(dpid), mig, nx=True, ex=int(timeout) + 30):
            raise erc.MigrationError(f"switch {dpid:#x} is already migrating "
                                     f"({self.bus.get(wire.lock_key(dpid)).decode()})")
        self.initiating[dpid] = core
        self.joining.pop(dpid, None)  # a winner lingering from the migration that brought it here
        self.started[mig] = time.time()
        self._inflight(core)
        LOG.info("%s: migrating %#x to %s (commit %s, transfer %s)", self.me, dpid,
                 ",".join(cands), commit, transfer)
        self._exec(dpid, core, core.start(time.monotonic(), roles.generation_id(dpid) or 0))
        return core

    def _candidates(self, to: List[Any], auto: Any) -> List[str]:
        peers = self._known_peers()
        if auto is not None:
            if to:
                raise erc.MigrationError("give either candidates or auto, not both")
            if not isinstance(auto, int) or auto < 1:
                raise erc.MigrationError("auto must be a positive number of candidates")
            live = [p for p in peers.values() if p.get("load") is not None]
            if len(live) < auto:
                raise erc.MigrationError(f"discovery sees {len(live)} controller(s), "
                                         f"{auto} wanted")
            to = [p["id"] for p in sorted(live, key=lambda p: (float(p["load"]), p["id"]))[:auto]]
        if not to or not all(isinstance(c, str) and c for c in to):
            raise erc.MigrationError("no candidate controller given")
        unknown = [c for c in to if c not in peers and c != self.me]
        if unknown:
            raise erc.MigrationError(f"unknown controller(s) {', '.join(unknown)} (known: "
                                     f"{', '.join(sorted(peers)) or 'none'})")
        res = self.bus.execute_command("PUBSUB", "NUMSUB", *[wire.channel(c) for c in to])
        dead = [c for c, n in zip(to, res[1::2]) if not int(n)]
        if dead:
            raise erc.MigrationError(f"controller(s) {', '.join(dead)} not running "
                                     "(no subscriber on the bus)")
        return list(to)

    def _known_peers(self) -> Dict[str, Dict[str, Any]]:
        """What zeroconf discovery sees (ctl:peers, kept by the instance's advertiser), plus the
        static list of the config."""
        peers: Dict[str, Dict[str, Any]] = {}
        for k, v in self.redis.hgetall(wire.PEERS_KEY).items():
            try:
                peers[k.decode()] = json.loads(v)
            except ValueError:
                continue
        for p in self.cfg.peers:
            peers.setdefault(p, {"id": p, "load": None})
        return peers

    def _op_cancel(self, req: wire.Msg) -> None:
        reply = str(req.body.get("reply") or "")
        core = self.initiating.get(req.dpid)
        if core is None or core.finished:
            self._reply(reply, req.mig, {"ok": False, "error": f"no migration of {req.dpid:#x} "
                                         f"in flight from {self.me}", "record": None})
            return
        try:
            actions = core.cancel(time.monotonic())
        except erc.MigrationError as e:
            self._reply(reply, req.mig, {"ok": False, "error": str(e), "record": core.record()})
            return
        self._reply(reply, req.mig, {"ok": True, "error": None, "record": None})
        self._exec(req.dpid, core, actions)

    def _reply(self, channel: str, request: str, body: Dict[str, Any]) -> None:
        if channel:
            self.bus.publish(channel, wire.encode(wire.Msg(wire.OP_RESULT, request, 0, self.me,
                                                           body)))

    # -- candidate side ---------------------------------------------------------------------------
    def _on_start(self, msg: wire.Msg) -> None:
        dpid, now = msg.dpid, time.monotonic()
        why = None
        if dpid not in self.roles.datapaths:
            why = f"{self.me} is not connected to switch {dpid:#x}"
        elif self.roles.is_master(dpid):
            why = f"{self.me} is already MASTER of {dpid:#x}"
        elif self._core(dpid) is not None:
            why = f"{self.me} is busy with another migration of {dpid:#x}"
        if why is None:
            try:
                cand, actions = erc.CandidateCore.from_start(now, self.me, msg)
            except wire.WireError as e:
                why = str(e)
        if why is not None:
            self.work.put(lambda: self._send(dpid, msg.mig, msg.src, wire.REFUSE, {"reason": why}))
            return
        self.joining[dpid] = cand
        LOG.info("%s: candidate for %#x in %s (initiator %s)", self.me, dpid, msg.mig, msg.src)
        self._enqueue(dpid, cand, actions)

    # -- carrying out actions (worker greenthread only, but for Release) ------------------------------
    def _enqueue(self, dpid: int, core: Core, actions: List[Any]) -> None:
        """Release at once, the rest in the worker's order. The core stopped buffering when it
        returned a Release; the next packet-in may be read as soon as this greenthread yields,
        and it must reach the apps after the released ones, not before.

        Sends the core put just before a Release (the winner's END_MIGRATION) go at once too,
        right after it: queuing the release does not yield, a publish writes before it waits,
        so END is out before the app that answers the release gets to run; from the worker it
        would go after the whole drain (a winner under 90 % load: median 105 -> 81 ms, 300 runs
        each of "fixed-high 10/90"). END only marks the time (DRAINED ends the migration too),
        so one that cannot be sent is logged, not raised."""
        now = [a for a in actions if isinstance(a, erc.Release)]
        rest = [a for a in actions if not isinstance(a, erc.Release)]
        head: List[Any] = []
        if now:
            first = actions[:actions.index(now[0])]
            if first and all(isinstance(a, erc.Send) for a in first):
                head, rest = first, rest[len(first):]
        if now:
            self._exec(dpid, core, now)
        for a in head:
            try:
                self._exec(dpid, core, [a])
            except redis.RedisError as e:
                LOG.error("%s: %s to %s not sent (bus): %s", self.me, a.type, a.to, e)
        if rest:
            self.work.put(lambda: self._exec(dpid, core, rest))

    def _worker(self) -> None:
        while True:
            job = self.work.get()
            try:
                job()
            except Exception:  # noqa: BLE001 -- a dead worker would stop every migration
                LOG.exception("%s in the ERC worker", MARKER)

    def _exec(self, dpid: int, core: Core, actions: List[Any]) -> None:
        mig = core.mig
        for a in actions:
            dp = self.roles.datapaths.get(dpid)
            if isinstance(a, erc.Send):
                self._send(dpid, mig, a.to, a.type, a.body, a.payload)
            elif isinstance(a, erc.RequestRole):
                if dp is None:
                    LOG.error("%s: %#x disconnected; cannot ask for %s", self.me, dpid, a.role.name)
                    continue
                persist = a.role == Role.SLAVE or (a.role == Role.MASTER
                                                   and isinstance(core, erc.InitiatorCore))
                self.roles.set_role(dpid, a.role, a.generation_id, a.fenced, persist=persist)
            elif isinstance(a, erc.PlaceMarker) and dp is not None:
                dp.send_msg(ofmsgs.marker_add(dp, a.tag))
                dp.send_msg(ofmsgs.marker_delete(dp, a.tag))
            elif isinstance(a, erc.PublishSnapshot):
                assert isinstance(core, erc.InitiatorCore) and core.snapshot is not None
                self.bus.set(wire.xfer_key(mig), memoryview(core.snapshot), ex=120)
            elif isinstance(a, erc.Restore):
                self._restore(dpid, core, a)
            elif isinstance(a, erc.Release) and dp is not None:
                self.send_event_to_observers(EventRelease(dp, a.msgs))
                if a.then_flushed:
                    self._quiesce(dpid, lambda: self.work.put(
                        lambda: self._exec(dpid, core, core.flushed(time.monotonic()))))
            elif isinstance(a, erc.DropBuffer):
                if a.count:
                    LOG.info("%s: %d buffered message(s) of %#x dropped: %s", self.me,
                             a.count, dpid, a.why)
            elif isinstance(a, erc.DropState):
                n = snapshot.drop(self.redis, dpid)
                self.redis.srem(INCOMING_KEY, f"{dpid:016x}")
                self.send_event_to_observers(EventStateMoved(dpid, False))
                LOG.info("%s: dropped %d state key(s) of %#x", self.me, n, dpid)
            elif isinstance(a, erc.Standby) and dp is not None:
                dp.send_msg(ofmsgs.set_async(dp, a.on))
            elif isinstance(a, erc.Claim):
                won = self._claim(mig, a.who, a.force)
                if isinstance(core, erc.CandidateCore):
                    self._exec(dpid, core, core.claim_result(time.monotonic(), won))
            elif isinstance(a, erc.Note):
                LOG.info("%s: %s", self.me, a.text)
            elif isinstance(a, erc.Finished):
                self._finished(dpid, core, a)

    def _quiesce(self, dpid: int, done: Callable[[], None]) -> None:
        ev = EventQuiesce(dpid, done)
        if self.get_observers(ev, None):
            self.send_event_to_observers(ev)
        else:
            done()

    def _snapshot(self, dpid: int) -> None:
        core = self.initiating.get(dpid)
        if core is None or core.finished:
            return
        blob = snapshot.dump(self.redis, dpid)
        self._exec(dpid, core, core.snapshot_ready(time.monotonic(), blob, snapshot.digest(blob)))

    def _restore(self, dpid: int, core: Core, a: erc.Restore) -> None:
        assert isinstance(core, erc.CandidateCore)
        dp = self.roles.datapaths.get(dpid)
        moved = False
        try:
            blob = a.snapshot
            if a.key:
                blob = self.bus.get(a.key)
                if blob is None:
                    raise snapshot.SnapshotError(f"published snapshot {a.key} is gone")
            got = snapshot.digest(blob)
            if got == a.digest:
                if "write" in self.faults:
                    LOG.warning("%s: fault injection: writing the state of %#x fails", self.me,
                                dpid)
                    raise redis.ConnectionError("fault injection: Redis unreachable")
                self.redis.sadd(INCOMING_KEY, f"{dpid:016x}")
                snapshot.restore(self.redis, dpid, blob)
                moved = True
            gap = tuple(compat.parse_for(dp, raw) for raw in erc.split_gap(a.gap))
        except (snapshot.SnapshotError, wire.WireError, redis.RedisError) as e:
            LOG.error("%s: state of %#x not restored: %s", self.me, dpid, e)
            self._send(dpid, core.mig, core.initiator, wire.REFUSE, {"reason": f"restore: {e}"})
            self._exec(dpid, core, core.abandon(time.monotonic(), f"restore failed: {e}"))
            return
        self._exec(dpid, core, core.restored_state(time.monotonic(), got, gap))
        if moved:  # after STATE_ACK went out: the apps' read-ahead is not on the race's clock
            self.send_event_to_observers(EventStateMoved(dpid, True))

    def _claim(self, mig: str, who: str, force: bool = False) -> bool:
        """A bus that cannot be reached counts as a lost claim: better no rescue than two."""
        key = wire.claim_key(mig)
        try:
            if self.bus.set(key, who, nx=not force, ex=3600):
                return True
            held = self.bus.get(key)
        except redis.RedisError as e:
            LOG.error("%s: claim of %s failed: bus unreachable (%s)", self.me, mig, e)
            return False
        return held is not None and held.decode() == who

    def _finished(self, dpid: int, core: Core, a: erc.Finished) -> None:
        if isinstance(core, erc.InitiatorCore):
            rec = core.record()
            rec["started"] = self.started.pop(core.mig, None)
            self._archive(rec, core.mig, dpid)
            channel, request = self.replies.pop(core.mig, ("", ""))
            self._reply(channel, request, {"ok": True, "error": None, "record": rec})
            LOG.info("%s: migration %s of %#x %s%s (winner %s, %.1f ms)", self.me, core.mig, dpid,
                     a.outcome, f": {a.reason}" if a.reason else "", rec["winner"],
                     rec["total_ms"] or 0.0)
            return
        LOG.info("%s: candidate for %#x in %s: %s%s", self.me, dpid, core.mig, a.outcome,
                 f" ({a.reason})" if a.reason else "")
        if a.outcome in ("won", "rescued"):
            self.redis.srem(INCOMING_KEY, f"{dpid:016x}")
            self.roles.persist(dpid, Role.MASTER)
        if a.outcome == "rescued":
            self._archive({"mig": core.mig, "dpid": dpid, "initiator": core.initiator,
                           "winner": self.me, "outcome": "rescued",
                           "reason": f"initiator {core.initiator} vanished; {self.me} took over",
                           "started": None, "total_ms": None, "phases_ms": None}, core.mig, dpid)

    def _archive(self, rec: Dict[str, Any], mig: str, dpid: int) -> None:
        pipe = self.bus.pipeline(transaction=False)
        pipe.hdel(wire.INFLIGHT_KEY, mig)
        pipe.lpush(wire.HISTORY_KEY, json.dumps(rec))
        pipe.ltrim(wire.HISTORY_KEY, 0, wire.HISTORY_CAP - 1)
        pipe.delete(wire.xfer_key(mig))
        pipe.execute()
        self._cas_del(keys=[wire.lock_key(dpid)], args=[mig])

    def _inflight(self, core: erc.InitiatorCore) -> None:
        rec = core.record()
        rec["started"] = self.started.get(core.mig)
        rec["outcome"] = "in flight"
        self.bus.hset(wire.INFLIGHT_KEY, core.mig, json.dumps(rec))

    def _publish_master(self, dpid: int, role: Role) -> None:
        field = wire.dpid_text(dpid)
        try:
            if role == Role.MASTER:
                self.bus.hset(wire.MASTER_KEY, field, self.me)
            else:
                self._hcas_del(keys=[wire.MASTER_KEY], args=[field, self.me])
        except redis.RedisError as e:
            LOG.error("%s: bus unreachable, ctl:master not updated: %s", self.me, e)

    def _cleanup_orphans(self) -> None:
        """State restored for a migration this instance never won (it crashed): drop it."""
        for raw in self.redis.smembers(INCOMING_KEY):
            dpid = int(raw, 16)
            n = snapshot.drop(self.redis, dpid)
            LOG.warning("%s: dropped %d key(s) of %#x left by an unfinished migration", self.me,
                        n, dpid)
        self.redis.delete(INCOMING_KEY)

    # -- time -------------------------------------------------------------------------------------
    def _ticker(self) -> None:
        last_check = 0.0
        while True:
            compat.hub.sleep(TICK_S)
            now = time.monotonic()
            cores: List[Tuple[int, Core]] = [(d, c) for d, c in self.initiating.items()
                                             if not c.finished]
            cores += [(d, c) for d, c in self.joining.items() if c.live or c.lingering(now)]
            self._forget_finished(now)
            if not cores:
                continue
            for dpid, core in cores:
                actions = core.tick(now)
                if actions:
                    self._enqueue(dpid, core, actions)
            if now - last_check >= LIVENESS_S:
                last_check = now
                try:
                    self._check_liveness(cores, now)
                except redis.RedisError as e:
                    LOG.error("%s: liveness check failed: %s", self.me, e)

    def _check_liveness(self, cores: List[Tuple[int, Core]], now: float) -> None:
        watch: Dict[str, List[Tuple[int, Core]]] = {}
        for dpid, core in cores:
            peers = core.watched() if isinstance(core, erc.InitiatorCore) else [core.initiator]
            for p in peers:
                watch.setdefault(p, []).append((dpid, core))
        if not watch:
            return
        names = list(watch)
        res = self.bus.execute_command("PUBSUB", "NUMSUB", *[wire.channel(p) for p in names])
        for peer, n in zip(names, res[1::2]):
            if int(n):
                continue
            for dpid, core in watch[peer]:
                if isinstance(core, erc.InitiatorCore):
                    actions = core.peer_gone(now, peer)
                else:
                    actions = core.initiator_gone(now)
                if actions:
                    LOG.warning("%s: %s vanished from the bus (migration %s)", self.me, peer,
                                core.mig)
                    self._enqueue(dpid, core, actions)

    def _forget_finished(self, now: float) -> None:
        for d in [d for d, c in self.initiating.items() if c.finished]:
            del self.initiating[d]
        for d in [d for d, c in self.joining.items() if not c.live and not c.lingering(now)]:
            del self.joining[d]

    def activity(self) -> Dict[str, Any]:
        """Migrations this instance takes part in now, and what it holds for them."""
        return {
            "initiating": {f"{d:#x}": {"mig": c.mig, "state": c.state.value,
                                       "buffered": len(c.buffer)}
                           for d, c in self.initiating.items() if not c.finished},
            "candidate": {f"{d:#x}": {"mig": c.mig, "step": c.step.value,
                                      "buffered": len(c.buffer) + len(c.gap)}
                          for d, c in self.joining.items() if c.live},
        }

    def _register(self) -> None:
        """Keep this instance's entry in the bus's ctl:instances (with its current load)."""
        while True:
            now, cpu = time.monotonic(), sum(os.times()[:2])
            t0, c0 = self._cpu
            self._cpu = (now, cpu)
            load = round((cpu - c0) / (now - t0), 3) if now > t0 else 0.0
            entry = {"id": self.me, "host": compat.cfg.CONF.ofp_listen_host or "127.0.0.1",
                     "of_port": compat.cfg.CONF.ofp_tcp_listen_port,
                     "channel": wire.channel(self.me), "load": load, "pid": os.getpid(),
                     "ts": time.time(), **self.activity()}
            try:
                self.bus.hset(wire.INSTANCES_KEY, self.me, json.dumps(entry))
            except redis.RedisError as e:
                LOG.error("%s: bus unreachable: %s", self.me, e)
            compat.hub.sleep(REGISTER_S)


def _parse_faults(text: str) -> Dict[str, Tuple[str, Any]]:
    """Testing only. 'drop:TYPE[:N]' loses the Nth outgoing TYPE, 'stall:TYPE:S' sends every
    outgoing TYPE S seconds late, 'hold:TYPE:S' handles every incoming TYPE S seconds late,
    'failwrite' makes restoring a received state fail as an unreachable Redis would.
    -> {type or 'in:'+type or 'write': (what, arg)}"""
    faults: Dict[str, Tuple[str, Any]] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        if item == "failwrite":
            faults["write"] = ("fail", 1)
            continue
        parts = item.split(":")
        if len(parts) < 2 or parts[0] not in ("drop", "stall", "hold") \
                or parts[1] not in wire.PEER_TYPES:
            raise SystemExit(f"sdnmig: [sdnmig] fault {item!r}: use drop:TYPE[:N], "
                             "stall:TYPE:SECONDS, hold:TYPE:SECONDS (TYPE one of "
                             + ", ".join(wire.PEER_TYPES) + ") or failwrite")
        try:
            arg = int(parts[2]) if parts[0] == "drop" and len(parts) > 2 else (
                1 if parts[0] == "drop" else float(parts[2]))
        except (ValueError, IndexError):
            raise SystemExit(f"sdnmig: [sdnmig] fault {item!r}: bad number") from None
        faults[("in:" if parts[0] == "hold" else "") + parts[1]] = (parts[0], arg)
    return faults
