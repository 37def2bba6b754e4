"""The hypervisor proxy: it holds each tenant controller's OpenFlow connection and forwards it to
the hypervisor instance its forwarding policy names; a migration changes the policy at run time.

A *tenancy* is one virtual switch, (switch, tenant): the proxy's connection to the tenant's
controller (the proxy connects, as the switch would), the `migration.Route` that says where the
tenant's words go, and the links of the instance serving it (`initial`) and of one taking it over
(`target`). Instances connect to the proxy, one link per virtual switch, and say who they are
with an `Attach` control message:

    mode "serve":     I serve (switch, tenant). New tenancy: the proxy connects to the tenant's
                      controller. A tenancy whose serving link broke: it is back (the route sends
                      it what the tenant said meanwhile).
    mode "take_over": I am taking (switch, tenant) over; the migration's control messages follow.

What the proxy answers itself: the tenant's HELLO and ECHO (so the tenant sees one steady switch).
What it keeps for a target: the tenant's last SET_CONFIG, SET_ASYNC and ROLE_REQUEST, sent ahead
as a `Session` control message, so the target's virtual switch is set as the tenant set it.

A proxy restart closes every tenant connection; the instances re-attach (they retry), the proxy
connects to the tenants' controllers again, and they see their switch reconnect and carry on.
"""
from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from hypervisor import migration as mig
from hypervisor import wire
from hypervisor.aio import Tasks
from hypervisor.wire import BadMessage, Conn, ofp

LOG = logging.getLogger("proxy")
CONTROL_KINDS = {cls.__name__: cls for cls in (
    mig.TakeOver, mig.HandedOver, mig.Committed, mig.Abort)}
SESSION_TYPES = (ofp.OFPT_SET_CONFIG, ofp.OFPT_SET_ASYNC, ofp.OFPT_ROLE_REQUEST)
MAX_EXTRA_HELLOS = 8     # a tenant that keeps saying hello is closed after this many


@dataclass
class Tenancy:
    dpid: int
    tenant: str
    controller: Tuple[str, int]
    route: mig.Route
    initial: Optional[Conn] = None
    target: Optional[Conn] = None
    tenant_conn: Optional[Conn] = None
    session: Dict[int, bytes] = field(default_factory=dict)
    closed: bool = False          # CloseTenant: nobody serves; no reconnect until an attach
    #: the last migration as the tenant saw it: the xid of the last message the initial got
    #: and of the first the target got (the paper's "affected requests" lie between them)
    last_migration: Dict[str, Any] = field(default_factory=dict)
    last_to_initial_xid: Optional[int] = None
    switching: bool = False       # a TakeOver came: the route's return to DIRECT ends it
    tenant_task: Optional[asyncio.Task] = None   # the one loop keeping the tenant connected
    stats: Dict[str, int] = field(default_factory=lambda: dict(
        from_tenant=0, to_tenant=0, migrations=0, aborted=0, tenant_connects=0))

    @property
    def key(self) -> str:
        return f"{self.tenant}@{self.dpid:#x}"


class Proxy:
    def __init__(self, host: str, port: int, deadline_s: float = mig.DEADLINE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host, self.port, self.deadline_s, self.clock = host, port, deadline_s, clock
        self.tenancies: Dict[Tuple[int, str], Tenancy] = {}
        self.server: Optional[asyncio.base_events.Server] = None
        self.tasks = Tasks(LOG, "proxy")
        self.errors = self.tasks.errors

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._link, self.host, self.port)
        if self.port == 0:
            self.port = self.server.sockets[0].getsockname()[1]
        self.tasks.spawn(self._ticker())
        LOG.info("proxy: listening for hypervisor instances on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        if self.server:
            self.server.close()
        self.tasks.cancel()
        for ten in self.tenancies.values():
            for conn in (ten.initial, ten.target, ten.tenant_conn):
                if conn is not None:
                    conn.close()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            for ten in list(self.tenancies.values()):
                self._run(ten, ten.route.tick(self.clock()))

    # -- instance links -------------------------------------------------------------------------------
    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(reader, writer, "instance")
        conn.nodelay()
        try:
            await conn.handshake()
            raw = await asyncio.wait_for(conn.recv(), 5.0)
            ctl = wire.as_control(raw)
            if ctl is None or ctl.kind != "Attach":
                raise BadMessage("the first message is not an Attach", raw, fatal=True)
            ten, role = self._attach(conn, ctl.body)
        except (BadMessage, ValueError, KeyError, TypeError, asyncio.IncompleteReadError,
                asyncio.TimeoutError, OSError) as exc:
            LOG.warning("proxy: an instance link was refused: %s", exc)
            if isinstance(exc, ValueError):   # it should stop trying: someone else serves
                conn.send(wire.control("Refused", reason=str(exc)))
                await conn.drain()
            conn.close()
            return
        try:
            while True:
                raw = await conn.recv()
                self._from_instance(ten, conn, raw)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except (BadMessage, mig.ProtocolError) as exc:
            LOG.warning("proxy: %s from %s: %s: link closed", ten.key, conn.name, exc)
        conn.close()
        self._instance_lost(ten, conn)

    def _attach(self, conn: Conn, body: Dict[str, Any]) -> Tuple[Tenancy, str]:
        dpid, tenant, mode = int(body["dpid"]), str(body["tenant"]), str(body["mode"])
        conn.name = str(body.get("instance", "?"))
        key = (dpid, tenant)
        ten = self.tenancies.get(key)
        if mode == "serve":
            if ten is None:
                host, _, port = str(body["controller"]).rpartition(":")
                ten = Tenancy(dpid, tenant, (host, int(port)), mig.Route(self.deadline_s))
                self.tenancies[key] = ten
                ten.initial = conn
                self._keep_tenant(ten)
            elif ten.initial is None and ten.route.state == mig.DIRECT and (
                    ten.route.initial_gone or ten.route.serving == "none"):
                ten.initial = conn
                if ten.route.serving == "none":
                    ten.route = mig.Route(self.deadline_s, ids=ten.route.ids)
                    effects: List[Any] = []
                else:
                    effects = ten.route.reattached(self.clock())
                ten.closed = False
                self._keep_tenant(ten)
                self._session_to(ten, conn)  # its new virtual switch, set as the tenant set it
                self._run(ten, effects)
            else:
                raise ValueError(f"{tenant}@{dpid:#x} is served already (by "
                                 f"{ten.initial.name if ten.initial else 'nobody'})")
            LOG.info("proxy: %s served by %s", ten.key, conn.name)
            return ten, "initial"
        if mode == "take_over":
            if ten is None or ten.target is not None:
                raise ValueError(f"{tenant}@{dpid:#x}: " + (
                    "unknown tenancy" if ten is None else "a take-over is under way"))
            ten.target = conn
            return ten, "target"
        raise ValueError(f"unknown attach mode {mode!r}")

    def _from_instance(self, ten: Tenancy, conn: Conn, raw: bytes) -> None:
        now = self.clock()
        ctl = wire.as_control(raw)
        if ctl is not None:
            cls = CONTROL_KINDS.get(ctl.kind)
            if cls is None:
                raise BadMessage(f"unknown control message {ctl.kind!r}", raw, fatal=True)
            msg: Any = cls(str(ctl.body.get("mid", "")))
        else:
            msg = mig.Upstream(raw)
        if conn is ten.initial:
            self._run(ten, ten.route.from_initial(msg, now))
        elif conn is ten.target:
            if isinstance(msg, mig.TakeOver):
                self._session_to(ten, conn)   # the tenant's settings as of now, first
                ten.stats["migrations"] += 1
                ten.switching = True
                ten.last_migration = {"by": conn.name, "mid": msg.mid,
                                      "last_to_initial_xid": ten.last_to_initial_xid,
                                      "first_to_target_xid": None, "outcome": None}
            self._run(ten, ten.route.from_target(msg, now))
        # else: a released or aborted instance's late word: nobody listens

    def _instance_lost(self, ten: Tenancy, conn: Conn) -> None:
        if conn is ten.initial:
            ten.initial = None
            self._run(ten, ten.route.lost("initial", self.clock()))
        elif conn is ten.target:
            if not ten.switching:  # it never asked: nothing to undo
                ten.target = None
                return
            self._run(ten, ten.route.lost("target", self.clock()))
            ten.target = None

    # -- effects --------------------------------------------------------------------------------------
    def _run(self, ten: Tenancy, effects: List[Any]) -> None:
        for eff in effects:
            if isinstance(eff, mig.ToTenant):
                if ten.tenant_conn is not None:
                    ten.stats["to_tenant"] += 1
                    ten.tenant_conn.send(eff.msg)
            elif isinstance(eff, (mig.ToInitial, mig.ToTarget)):
                conn = ten.initial if isinstance(eff, mig.ToInitial) else ten.target
                if conn is not None:
                    msg = eff.msg
                    if isinstance(msg, mig.Control):
                        conn.send(wire.control(type(msg).__name__, mid=msg.mid))
                        continue
                    conn.send(msg)
                    if isinstance(eff, mig.ToInitial):
                        ten.last_to_initial_xid = wire.header(msg)[3]
                    elif ten.last_migration.get("first_to_target_xid", 0) is None:
                        ten.last_migration["first_to_target_xid"] = wire.header(msg)[3]
            elif isinstance(eff, mig.CloseTenant):
                ten.closed = True
                if ten.tenant_conn is not None:
                    ten.tenant_conn.close()
            else:
                raise AssertionError(f"unexpected effect {eff!r}")
        route = ten.route
        if route.state != mig.DIRECT or not ten.switching:
            return
        ten.switching = False
        if route.serving == "target":   # the policy now names the target: it is the one to
            LOG.info("proxy: %s now served by %s", ten.key,   # hand over from next time
                     ten.target.name if ten.target else "?")
            ten.last_migration["outcome"] = "late" if route.late else "done"
            ten.initial, ten.target = ten.target, None
            ten.route = mig.Route(self.deadline_s, ids=route.ids)
            if ten.initial is None:
                self._run(ten, ten.route.lost("initial", self.clock()))
        elif ten.target is not None:    # aborted: the initial serves on
            ten.stats["aborted"] += 1
            ten.last_migration["outcome"] = "aborted"
            LOG.info("proxy: %s: take-over by %s aborted", ten.key, ten.target.name)
            ten.target.close()
            ten.target = None

    def _session_to(self, ten: Tenancy, conn: Conn) -> None:
        conn.send(wire.control("Session", msgs=[raw.hex() for raw in ten.session.values()]))

    # -- the tenant's controller ------------------------------------------------------------------------
    def _keep_tenant(self, ten: Tenancy) -> None:
        if ten.tenant_task is None or ten.tenant_task.done():
            ten.tenant_task = self.tasks.spawn(self._tenant(ten))

    async def _tenant(self, ten: Tenancy) -> None:
        """Keep a connection to the tenant's controller while someone serves the tenancy."""
        host, port = ten.controller
        while not ten.closed and self.tenancies.get((ten.dpid, ten.tenant)) is ten:
            try:
                conn = await Conn.connect(host, port, f"tenant {ten.key}")
                await conn.handshake()
            except (OSError, BadMessage, asyncio.IncompleteReadError,
                    asyncio.TimeoutError) as exc:
                LOG.debug("proxy: %s: controller %s:%d not reachable: %s", ten.key, host, port,
                          exc)
                await asyncio.sleep(0.5)
                continue
            ten.tenant_conn, ten.session = conn, {}
            ten.stats["tenant_connects"] += 1
            LOG.info("proxy: %s: connected to its controller %s:%d", ten.key, host, port)
            await self._read_tenant(ten, conn)
            if ten.tenant_conn is conn:
                ten.tenant_conn = None
            conn.close()
            await asyncio.sleep(0.2)

    async def _read_tenant(self, ten: Tenancy, conn: Conn) -> None:
        hellos = 0
        try:
            while True:
                raw = await conn.recv()
                version, msg_type, _length, xid = wire.header(raw)
                if version != wire.VERSION:
                    conn.send(wire.error(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_VERSION, xid,
                                         raw))
                    continue
                if msg_type == ofp.OFPT_ECHO_REQUEST:
                    conn.send(wire.echo_reply(raw))
                    continue
                if msg_type in (ofp.OFPT_HELLO, ofp.OFPT_ECHO_REPLY):
                    hellos += msg_type == ofp.OFPT_HELLO
                    if hellos > MAX_EXTRA_HELLOS:
                        raise BadMessage(f"{hellos} HELLOs after the handshake", raw,
                                         fatal=True)
                    continue
                if msg_type == ofp.OFPT_EXPERIMENTER and len(raw) >= 12 and struct.unpack_from(
                        "!I", raw, 8)[0] == wire.CONTROL_EXPERIMENTER:
                    conn.send(wire.error(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_EXPERIMENTER,
                                         xid, raw))   # a tenant forging the protocol's words
                    continue
                if msg_type in SESSION_TYPES and not (
                        msg_type == ofp.OFPT_ROLE_REQUEST and len(raw) >= 12
                        and struct.unpack_from("!I", raw, 8)[0] == ofp.OFPCR_ROLE_NOCHANGE):
                    ten.session[msg_type] = raw
                ten.stats["from_tenant"] += 1
                self._run(ten, ten.route.from_tenant(raw, self.clock()))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            LOG.info("proxy: %s: controller connection lost", ten.key)
        except BadMessage as exc:
            LOG.warning("proxy: %s: the controller sent %s: connection closed", ten.key, exc)

    def status(self) -> Dict[str, Any]:
        return {"pid": os.getpid(), "listen": f"{self.host}:{self.port}",
                "tenancies": [{"switch": f"{t.dpid:#x}", "tenant": t.tenant,
                               "controller": f"{t.controller[0]}:{t.controller[1]}",
                               "served_by": t.initial.name if t.initial else None,
                               "taking_over": t.target.name if t.target else None,
                               "route": t.route.state,
                               "tenant_connected": t.tenant_conn is not None,
                               "last_migration": t.last_migration, **t.stats}
                              for t in self.tenancies.values()],
                "errors": list(self.errors)}


async def handle(proxy: Proxy, request: Dict[str, Any], stop: asyncio.Event) -> Any:
    """The control socket's requests: {"op": "status"} or {"op": "stop"}."""
    op = request.get("op")
    if op == "status":
        return proxy.status()
    if op == "stop":
        stop.set()
        return {"stopping": "proxy"}
    raise ValueError(f"unknown op {op!r}: status or stop")
