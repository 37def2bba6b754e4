"""A hypervisor instance: the controller of physical switches, presenting each tenant its slice.

asyncio around the pure parts: `slicing` (what a tenant may do and see), `migration` (the
control-path hand-over). One `SwitchLink` per connection to a physical switch, one `VSwitch` per
(switch, tenant): the tenant's virtual switch, with its own connection to the proxy and its own
migration machine (an `Initial` while it serves, a `Target` while it takes over).

Switch connections come two ways: the switch connects to `listen` (its configured controller),
or, to take a switch over, the instance connects to the switch's passive port (`ptcp:`); on both
it asks for every asynchronous message (a passive connection gets none until it does).

What a tenant sets on its virtual switch (SET_CONFIG, SET_ASYNC, its role) is kept here, never
sent to the shared connection; the proxy hands it to a target before the tenant's other words.
Tenant xids are translated to the switch link's own counter, which the protocol's barriers share,
so they never collide across tenants or with the protocol. A tenant's malformed or refused message
gets an OpenFlow error; a switch's malformed message closes that switch's connection only.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import struct
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from hypervisor import migration as mig
from hypervisor import ofcodec, wire
from hypervisor.aio import Tasks
from hypervisor.slicing import MARKER_COOKIE_MASK, MARKER_COOKIE_PREFIX, Refused, Slicer
from hypervisor.wire import BadMessage, Conn, ofp, parser

LOG = logging.getLogger("hypervisor")
#: the dummy flow matches what never arrives (a port number no switch of ours has, a local
#: experimental EtherType), so no tenant packet can meet it while it exists
MARKER_IN_PORT = 0xFEFF
MARKER_MATCH_ETH_TYPE = 0x88B5
EXACT_COOKIE = 0xFFFFFFFF_FFFFFFFF   # a marker's delete names its own flow only
NO_REPLY_MEMORY = 65536             # requests without a reply whose error we can still route
CONTROL_KINDS = {cls.__name__: cls for cls in (
    mig.TakeOver, mig.Drain, mig.Rerouted, mig.HandedOver, mig.Committed,
    mig.Release, mig.Resume, mig.Abort)}
#: what the hypervisor asks of every switch connection: every packet-in, port-status and
#: flow-removed reason, whatever the connection's role
ASYNC_ALL = dict(packet_in_mask=[0x7, 0x7], port_status_mask=[0x7, 0x7],
                 flow_removed_mask=[0xF, 0xF])
#: OpenFlow 1.3's defaults for a tenant that never sends SET_ASYNC (sec. 6.1.1 of the spec)
TENANT_ASYNC_DEFAULT = dict(packet_in_mask=[0x3, 0x0], port_status_mask=[0x7, 0x7],
                            flow_removed_mask=[0xF, 0x0])


def mid_cookie(mid: str) -> int:
    return MARKER_COOKIE_PREFIX | (int(mid, 16) & 0xFFFF_FFFFFFFF)


def cookie_mid(cookie: int) -> Optional[str]:
    if cookie & MARKER_COOKIE_MASK != MARKER_COOKIE_PREFIX:
        return None
    return f"{cookie & 0xFFFF_FFFFFFFF:012x}"


def marker_match(mid: str) -> Any:
    """One match per migration: markers of two migrations on one switch never replace each
    other (an ADD of an identical match and priority would, without a FLOW_REMOVED)."""
    return parser.OFPMatch(in_port=MARKER_IN_PORT, eth_type=MARKER_MATCH_ETH_TYPE,
                           metadata=int(mid, 16))


def new_mid() -> str:
    return f"{int.from_bytes(os.urandom(6), 'big'):012x}"


@dataclass
class Config:
    """What the management hands an instance."""

    name: str
    listen_host: str
    listen_port: int
    proxy_host: str
    proxy_port: int
    slices: List[Dict[str, Any]]
    controllers: Dict[str, str]     # tenant -> "host:port" of its controller
    deadline_s: float = mig.DEADLINE_S

    @classmethod
    def load(cls, path: Path) -> "Config":
        try:
            raw = json.loads(Path(path).read_text())
            return cls(name=str(raw["name"]), listen_host=raw["listen"]["host"],
                       listen_port=int(raw["listen"]["port"]),
                       proxy_host=raw["proxy"]["host"], proxy_port=int(raw["proxy"]["port"]),
                       slices=list(raw["slices"]), controllers=dict(raw["controllers"]),
                       deadline_s=float(raw.get("deadline_s", mig.DEADLINE_S)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: bad instance configuration: {exc!r}") from None


@dataclass
class Pending:
    vs: "VSwitch"
    tenant_xid: int


class SwitchLink:
    """One connection to a physical switch."""

    def __init__(self, conn: Conn, passive: bool) -> None:
        self.conn, self.passive = conn, passive
        self.dpid = 0
        self.vswitches: Dict[str, VSwitch] = {}
        self.xids = itertools.count(1)
        self.pending: Dict[int, Pending] = {}
        self.no_reply: "OrderedDict[int, Pending]" = OrderedDict()
        self.barriers: Dict[int, mig.Barrier] = {}
        self.standby: Optional[SwitchLink] = None
        self.idle = False

    def next_xid(self) -> int:
        xid = next(self.xids) & 0xFFFFFFFF
        if xid == 0:
            self.xids = itertools.count(2)
            xid = 1
        return xid


@dataclass
class VSwitch:
    dpid: int
    tenant: str
    machine: Any
    proxy: Optional[Conn] = None
    link: Optional[SwitchLink] = None
    miss_send_len: int = 128
    config_flags: int = 0
    role: int = ofp.OFPCR_ROLE_EQUAL
    async_cfg: Dict[str, List[int]] = field(default_factory=lambda: dict(TENANT_ASYNC_DEFAULT))
    done: Optional[asyncio.Future] = None
    stats: Dict[str, int] = field(default_factory=lambda: dict(to_switch=0, to_tenant=0,
                                                               refused=0))


class Instance:
    def __init__(self, cfg: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.clock = cfg, clock
        self.slicer = Slicer.from_config(cfg.slices)
        self.links: Dict[int, SwitchLink] = {}        # dpid -> the serving link
        self.vswitches: Dict[Tuple[int, str], VSwitch] = {}
        self.released: set = set()                     # dpids this instance handed over
        self.connecting: Dict[int, asyncio.Task] = {}  # dpid -> passive connect
        self.passive: Dict[int, Tuple[str, int]] = {}  # dpid -> its passive port
        self.server: Optional[asyncio.base_events.Server] = None
        self.tasks = Tasks(LOG, cfg.name)
        self.errors = self.tasks.errors

    # -- lifecycle ----------------------------------------------------------------------------------
    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, self.cfg.listen_host,
                                                 self.cfg.listen_port)
        self.tasks.spawn(self._ticker())
        LOG.info("%s: listening for switches on %s:%d", self.cfg.name, self.cfg.listen_host,
                 self.cfg.listen_port)

    async def stop(self) -> None:
        if self.server:
            self.server.close()
        self.tasks.cancel()
        for link in list(self.links.values()):
            link.conn.close()
        for vs in self.vswitches.values():
            if vs.proxy:
                vs.proxy.close()

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            now = self.clock()
            for vs in list(self.vswitches.values()):
                if isinstance(vs.machine, mig.Target):
                    self._run(vs, vs.machine.tick(now))

    # -- switch connections -------------------------------------------------------------------------
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(reader, writer, "switch")
        conn.nodelay()
        link = SwitchLink(conn, passive=False)
        try:
            await self._open_link(link)
        except (BadMessage, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            LOG.warning("%s: a switch's handshake failed: %s", self.cfg.name, exc)
            conn.close()
            return
        current = self.links.get(link.dpid)
        if current is not None and current.conn is not conn:
            # the switch's configuration now names us, beside the passive connection we serve
            # on: keep it as a standby, quiet, promoted if the serving one breaks
            LOG.info("%s: %016x connected actively; kept as standby", self.cfg.name, link.dpid)
            self._quiet(link)
            current.standby = link
            await self._read_switch(link)
            return
        if link.dpid in self.released:
            LOG.info("%s: %016x reconnected after its hand-over; kept idle", self.cfg.name,
                     link.dpid)
            self._quiet(link)
            await self._read_switch(link)
            return
        self.links[link.dpid] = link
        for tenant in self.slicer.tenants_on(link.dpid):
            if (link.dpid, tenant) in self.vswitches:
                continue  # a take-over of it is under way on a passive connection
            vs = VSwitch(link.dpid, tenant, mig.Initial(), link=link)
            self.vswitches[(link.dpid, tenant)] = vs
            link.vswitches[tenant] = vs
            self.tasks.spawn(self._attach(vs, "serve"))
        await self._read_switch(link)

    async def _open_link(self, link: SwitchLink, expect: Optional[int] = None) -> None:
        """HELLO, FEATURES (the dpid), and ask for everything asynchronous."""
        conn = link.conn
        await conn.handshake()
        conn.send(wire.encode(parser.OFPFeaturesRequest(wire.DESC), 0xFFFFFFF0))
        while True:
            raw = await asyncio.wait_for(conn.recv(), 5.0)
            if wire.is_type(raw, ofp.OFPT_ECHO_REQUEST):
                conn.send(wire.echo_reply(raw))
            elif wire.is_type(raw, ofp.OFPT_FEATURES_REPLY):
                break
        link.dpid = struct.unpack_from("!Q", raw, 8)[0]
        if expect is not None and link.dpid != expect:
            raise BadMessage(f"expected switch {expect:016x}, found {link.dpid:016x}",
                             fatal=True)
        conn.send(wire.encode(parser.OFPSetConfig(wire.DESC, 0, ofp.OFPCML_NO_BUFFER)))
        conn.send(wire.encode(parser.OFPSetAsync(wire.DESC, **ASYNC_ALL)))

    def _quiet(self, link: SwitchLink) -> None:
        link.idle = True
        link.conn.send(wire.encode(parser.OFPSetAsync(
            wire.DESC, packet_in_mask=[0, 0], port_status_mask=[0, 0],
            flow_removed_mask=[0, 0])))

    async def _connect_passive(self, dpid: int, host: str, port: int) -> None:
        try:
            conn = await Conn.connect(host, port, f"switch {dpid:016x} (passive)")
            link = SwitchLink(conn, passive=True)
            await self._open_link(link, expect=dpid)
        except (BadMessage, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            LOG.warning("%s: passive connection to %s:%d failed: %s", self.cfg.name, host, port,
                        exc)
            for vs in self._waiting(dpid):
                self._run(vs, vs.machine.lost("switch", self.clock()))
            return
        finally:
            self.connecting.pop(dpid, None)
        if not self._waiting(dpid):  # every take-over that wanted it gave up meanwhile
            conn.close()
            return
        self.links[dpid] = link
        self.released.discard(dpid)
        for vs in self._waiting(dpid):
            vs.link = link
            link.vswitches[vs.tenant] = vs
            self._run(vs, vs.machine.switch_ready(self.clock()))
        await self._read_switch(link)

    def _waiting(self, dpid: int) -> List[VSwitch]:
        return [vs for (d, _t), vs in self.vswitches.items()
                if d == dpid and isinstance(vs.machine, mig.Target)
                and vs.machine.state == mig.CONNECTING]

    async def _read_switch(self, link: SwitchLink) -> None:
        try:
            while True:
                raw = await link.conn.recv()
                if link.idle:
                    if wire.is_type(raw, ofp.OFPT_ECHO_REQUEST):
                        link.conn.send(wire.echo_reply(raw))
                    continue
                self._from_switch(link, raw)
        except BadMessage as exc:
            LOG.warning("%s: switch %016x sent a malformed message (%s): connection closed",
                        self.cfg.name, link.dpid, exc)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:  # a bug (logged by _guard) must not leave a dead link in place either
            link.conn.close()
            self._switch_lost(link)

    def _switch_lost(self, link: SwitchLink) -> None:
        now = self.clock()
        current = self.links.get(link.dpid)
        if current is not None and current.standby is link:
            current.standby = None
            return
        if current is not link:
            return
        del self.links[link.dpid]
        if link.standby is not None and link.vswitches:  # promote: the switch's configuration
            # names us
            standby = link.standby
            LOG.info("%s: %016x: serving connection lost; the standby takes over",
                     self.cfg.name, link.dpid)
            standby.idle = False
            standby.conn.send(wire.encode(parser.OFPSetAsync(wire.DESC, **ASYNC_ALL)))
            self.links[link.dpid] = standby
            for tenant, vs in link.vswitches.items():
                vs.link = standby
                standby.vswitches[tenant] = vs
            return
        for vs in list(link.vswitches.values()):
            vs.link = None
            if isinstance(vs.machine, mig.Target) and vs.machine.state != mig.ACTIVE:
                self._run(vs, vs.machine.lost("switch", now))
            else:  # the tenant waits at the proxy for the switch to come back (or a take-over)
                self._drop_vswitch(vs)

    def _drop_vswitch(self, vs: VSwitch) -> None:
        self.vswitches.pop((vs.dpid, vs.tenant), None)
        if vs.link is not None:
            vs.link.vswitches.pop(vs.tenant, None)
        if vs.proxy is not None:
            vs.proxy.close()
            vs.proxy = None
        if vs.done is not None and not vs.done.done():
            vs.done.set_result(getattr(vs.machine, "state", "gone"))

    def _from_switch(self, link: SwitchLink, raw: bytes) -> None:
        now = self.clock()
        version, msg_type, _length, xid = wire.header(raw)
        if msg_type == ofp.OFPT_ECHO_REQUEST:
            link.conn.send(wire.echo_reply(raw))
            return
        if msg_type in (ofp.OFPT_ECHO_REPLY, ofp.OFPT_HELLO):
            return
        if msg_type == ofp.OFPT_BARRIER_REPLY and xid in link.barriers:
            barrier = link.barriers.pop(xid)
            for vs in list(link.vswitches.values()):
                self._run(vs, vs.machine.barrier_reply(barrier, now))
            return
        if msg_type == ofp.OFPT_PACKET_IN:
            msg = wire.decode(raw)
            owned = self.slicer.packet_in(link.dpid, msg)
            if owned is None:
                return
            vs = link.vswitches.get(owned[0])
            if vs is not None and self._wants(vs, "packet_in_mask", msg.reason):
                copy = owned[1]
                self._up(vs, raw if copy is msg else
                         ofcodec.packet_in_with(raw, copy.data, copy.total_len))
            return
        if msg_type == ofp.OFPT_FLOW_REMOVED:
            msg = wire.decode(raw)
            mid = cookie_mid(msg.cookie)
            if mid is not None:
                for vs in list(link.vswitches.values()):
                    self._run(vs, vs.machine.marker(mid, now))
                return
            tenant = self.slicer.flow_removed(link.dpid, msg)
            vs = link.vswitches.get(tenant) if tenant else None
            if vs is not None and self._wants(vs, "flow_removed_mask", msg.reason):
                self._up(vs, raw)
            return
        if msg_type == ofp.OFPT_PORT_STATUS:
            msg = wire.decode(raw)
            for tenant in self.slicer.port_status(link.dpid, msg):
                vs = link.vswitches.get(tenant)
                if vs is not None and self._wants(vs, "port_status_mask", msg.reason):
                    self._up(vs, raw)
            return
        self._reply(link, raw, msg_type, xid)

    def _reply(self, link: SwitchLink, raw: bytes, msg_type: int, xid: int) -> None:
        more = (msg_type == ofp.OFPT_MULTIPART_REPLY
                and struct.unpack_from("!H", raw, 10)[0] & ofp.OFPMPF_REPLY_MORE)
        if msg_type == ofp.OFPT_ERROR:
            pend = link.pending.pop(xid, None) or link.no_reply.pop(xid, None)
            if pend is None:
                if xid not in link.barriers:
                    LOG.warning("%s: %016x: error for xid %d, nobody's: %s", self.cfg.name,
                                link.dpid, xid, raw[8:12].hex())
                return
            data = bytearray(raw)
            if len(data) >= 20:  # the offending request's header carries our xid: theirs back
                data[16:20] = struct.pack("!I", pend.tenant_xid)
            self._up(pend.vs, wire.with_xid(bytes(data), pend.tenant_xid))
            return
        pend = link.pending.get(xid) if more else link.pending.pop(xid, None)
        if pend is None:
            return  # a reply to a request of ours, or to one whose tenant is gone
        if pend.vs.link is not link:
            return
        if msg_type == ofp.OFPT_MULTIPART_REPLY:
            raw = self._filtered(pend, raw)
        self._up(pend.vs, wire.with_xid(raw, pend.tenant_xid))

    def _filtered(self, pend: Pending, raw: bytes) -> bytes:
        """Only the tenant's ports and flows (the entries as the switch wrote them)."""
        mp_type = struct.unpack_from("!H", raw, 8)[0]
        vs = pend.vs
        if mp_type in (ofp.OFPMP_PORT_DESC, ofp.OFPMP_PORT_STATS):
            ports = self.slicer.ports(vs.tenant, vs.dpid)
            return ofcodec.multipart_filtered(
                raw, lambda _i, entry: struct.unpack_from("!I", entry)[0] in ports)
        if mp_type == ofp.OFPMP_FLOW:
            body = wire.decode(raw).body
            return ofcodec.multipart_filtered(
                raw, lambda i, _e: self.slicer.flow_removed(vs.dpid, body[i]) == vs.tenant)
        return raw

    def _wants(self, vs: VSwitch, mask: str, reason: int) -> bool:
        index = 1 if vs.role == ofp.OFPCR_ROLE_SLAVE else 0
        return bool(vs.async_cfg[mask][index] & (1 << reason))

    def _up(self, vs: VSwitch, raw: bytes) -> None:
        """A message for the tenant, through its machine (which may hold or discard it)."""
        self._run(vs, vs.machine.from_switch(raw, self.clock()))

    # -- the proxy link -------------------------------------------------------------------------------
    async def _attach(self, vs: VSwitch, mode: str, mid: str = "") -> None:
        """Connect this virtual switch to the proxy; a serving one retries until it gets
        there."""
        while self.vswitches.get((vs.dpid, vs.tenant)) is vs:
            try:
                conn = await Conn.connect(self.cfg.proxy_host, self.cfg.proxy_port,
                                          f"proxy for {vs.tenant}@{vs.dpid:016x}")
                await conn.handshake()
            except (OSError, BadMessage, asyncio.IncompleteReadError,
                    asyncio.TimeoutError) as exc:
                if mode != "serve":  # a take-over that never reached the proxy: nothing
                    LOG.warning("%s: %s@%016x: proxy not reachable: %s", self.cfg.name,
                                vs.tenant, vs.dpid, exc)   # began
                    vs.machine.state = mig.FAILED
                    self._drop_vswitch(vs)
                    return
                LOG.info("%s: proxy not reachable (%s); retrying", self.cfg.name, exc)
                await asyncio.sleep(0.5)
                continue
            vs.proxy = conn
            conn.send(wire.control("Attach", dpid=vs.dpid, tenant=vs.tenant, mode=mode,
                                   mid=mid, instance=self.cfg.name,
                                   controller=self.cfg.controllers.get(vs.tenant, "")))
            if mode == "take_over":
                self._run(vs, vs.machine.begin(self.clock()))
            await self._read_proxy(vs, conn)
            if not (isinstance(vs.machine, mig.Initial) and vs.machine.state == mig.SERVING
                    and self.vswitches.get((vs.dpid, vs.tenant)) is vs):
                return
            mode, mid = "serve", ""   # a target that took over serves now: it re-attaches too
            LOG.info("%s: proxy link of %s@%016x lost; reconnecting", self.cfg.name,
                     vs.tenant, vs.dpid)
            await asyncio.sleep(0.2)

    async def _read_proxy(self, vs: VSwitch, conn: Conn) -> None:
        try:
            while True:
                raw = await conn.recv()
                ctl = wire.as_control(raw)
                now = self.clock()
                if ctl is None:
                    self._run(vs, vs.machine.from_proxy(raw, now))
                    continue
                if ctl.kind == "Session":  # how the tenant set its virtual switch
                    for text in ctl.body.get("msgs", []):
                        msg = bytes.fromhex(text)
                        self._virtual(vs, msg, wire.header(msg)[1], 0, silent=True)
                    continue
                if ctl.kind == "Refused":  # someone else serves the tenant now: stop
                    LOG.warning("%s: the proxy refused %s@%016x: %s", self.cfg.name,
                                vs.tenant, vs.dpid, ctl.body.get("reason"))
                    vs.machine.state = (mig.RELEASED if isinstance(vs.machine, mig.Initial)
                                        else mig.FAILED)
                    self._stop_serving(vs)
                    break
                cls = CONTROL_KINDS.get(ctl.kind)
                if cls is None:
                    raise BadMessage(f"unknown control message {ctl.kind!r}", raw, fatal=True)
                self._run(vs, vs.machine.from_proxy(cls(str(ctl.body.get("mid", ""))), now))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except (BadMessage, mig.ProtocolError, ValueError) as exc:
            LOG.warning("%s: proxy link of %s@%016x: %s: closed", self.cfg.name, vs.tenant,
                        vs.dpid, exc)
        finally:
            conn.close()
        if vs.proxy is conn:
            vs.proxy = None
            if isinstance(vs.machine, mig.Target) and vs.machine.state != mig.ACTIVE:
                self._run(vs, vs.machine.lost("proxy", self.clock()))
            elif isinstance(vs.machine, mig.Initial) and vs.machine.state != mig.SERVING:
                vs.machine = mig.Initial()  # the proxy is gone mid-migration: serve again

    # -- effects ------------------------------------------------------------------------------------
    def _run(self, vs: VSwitch, effects: List[Any]) -> None:
        for eff in effects:
            if isinstance(eff, mig.ToSwitch):
                self._to_switch(vs, eff.msg)
            elif isinstance(eff, mig.ToProxy):
                msg = eff.msg
                if vs.proxy is None:
                    continue
                if isinstance(msg, mig.Upstream):
                    vs.stats["to_tenant"] += 1
                    vs.proxy.send(msg.msg)
                else:
                    vs.proxy.send(wire.control(type(msg).__name__, mid=msg.mid))
            elif isinstance(eff, mig.ConnectSwitch):
                self._connect(vs)
            elif isinstance(eff, mig.StopServing):
                self._stop_serving(vs)
            else:
                raise AssertionError(f"unexpected effect {eff!r}")
        machine = vs.machine
        if isinstance(machine, mig.Target) and machine.state == mig.ACTIVE:
            vs.machine = mig.Initial()  # it serves now: the next migration finds it serving,
            vs.machine.ids.past.add(machine.mid)   # and a late word of this one is ignored
            LOG.info("%s: took over %s@%016x", self.cfg.name, vs.tenant, vs.dpid)
            if vs.done is not None and not vs.done.done():
                vs.done.set_result(mig.ACTIVE)

    def _connect(self, vs: VSwitch) -> None:
        link = self.links.get(vs.dpid)
        if link is not None and not link.idle:  # already connected for another tenant
            vs.link = link
            link.vswitches[vs.tenant] = vs
            loop = asyncio.get_running_loop()
            loop.call_soon(lambda: self._run(vs, vs.machine.switch_ready(self.clock())))
            return
        if vs.dpid not in self.connecting:
            host, port = self.passive[vs.dpid]
            self.connecting[vs.dpid] = self.tasks.spawn(self._connect_passive(vs.dpid, host, port))

    def _stop_serving(self, vs: VSwitch) -> None:
        link = vs.link
        if isinstance(vs.machine, mig.Initial) and vs.machine.state == mig.RELEASED:
            LOG.info("%s: released %s@%016x", self.cfg.name, vs.tenant, vs.dpid)
        self._drop_vswitch(vs)
        if link is None or link.vswitches:
            return
        # no tenant left on this switch: a passive connection is closed; an active one would
        # only come back to us, so it stays, quiet, until the switch is told to use the target
        if isinstance(vs.machine, mig.Initial):  # handed over (not a take-over that failed)
            self.released.add(link.dpid)
        standby, link.standby = link.standby, None
        for each in (link, standby):
            if each is None:
                continue
            if each.passive:
                each.conn.close()
            else:
                self._quiet(each)

    def _to_switch(self, vs: VSwitch, msg: Any) -> None:
        link = vs.link
        if link is None:
            return
        conn = link.conn
        if isinstance(msg, mig.Barrier):
            xid = link.next_xid()
            link.barriers[xid] = msg
            conn.send(wire.encode(parser.OFPBarrierRequest(wire.DESC), xid))
        elif isinstance(msg, (mig.MarkAdd, mig.MarkDelete)):
            add = isinstance(msg, mig.MarkAdd)
            conn.send(wire.encode(parser.OFPFlowMod(
                wire.DESC, cookie=mid_cookie(msg.mid), cookie_mask=EXACT_COOKIE,
                command=ofp.OFPFC_ADD if add else ofp.OFPFC_DELETE_STRICT, priority=0,
                out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY,
                flags=ofp.OFPFF_SEND_FLOW_REM if add else 0,
                match=marker_match(msg.mid), instructions=[]),
                link.next_xid()))
        else:
            vs.stats["to_switch"] += 1
            self._tenant_request(vs, link, msg)

    def _tenant_request(self, vs: VSwitch, link: SwitchLink, raw: bytes) -> None:
        _v, msg_type, _l, txid = wire.header(raw)
        try:
            if msg_type in (ofp.OFPT_FEATURES_REQUEST, ofp.OFPT_BARRIER_REQUEST):
                self._forward(vs, link, raw, txid, reply=True)
            elif msg_type == ofp.OFPT_ECHO_REQUEST:
                self._up(vs, wire.echo_reply(raw))
            elif msg_type == ofp.OFPT_HELLO:
                pass
            elif msg_type == ofp.OFPT_FLOW_MOD:
                for out in self.slicer.flow_mod(vs.tenant, vs.dpid, wire.decode(raw)):
                    self._forward(vs, link, wire.encode(out, 0), txid, reply=False)
            elif msg_type == ofp.OFPT_PACKET_OUT:
                out = self.slicer.packet_out(vs.tenant, vs.dpid, ofcodec.packet_out(raw))
                if out.actions:  # none left (FLOOD on a one-port slice) is a drop; and the
                    # platform's encoder garbles a packet-out without actions (test_ofmsgs)
                    self._forward(vs, link, wire.encode(out, 0), txid, reply=False)
            elif msg_type == ofp.OFPT_MULTIPART_REQUEST:  # allowed ones go as they are: the
                self.slicer.multipart_request(              # replies are filtered
                    vs.tenant, vs.dpid, ofcodec.multipart_request(raw))
                self._forward(vs, link, raw, txid, reply=True)
            elif msg_type in ofcodec.SHARED_MODS or msg_type == ofp.OFPT_PORT_MOD:
                self.slicer.check(vs.tenant, vs.dpid, ofcodec.port_mod(raw)
                                  if msg_type == ofp.OFPT_PORT_MOD else ofcodec.shared_mod(raw))
                self._forward(vs, link, raw, txid, reply=False)
            elif msg_type in _VIRTUAL:
                self._virtual(vs, raw, msg_type, txid)
            else:
                raise BadMessage(f"type {msg_type} is not for a tenant", raw,
                                 ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE)
        except Refused as exc:
            vs.stats["refused"] += 1
            LOG.info("%s: %s@%016x: refused (%s)", self.cfg.name, vs.tenant, vs.dpid, exc)
            self._up(vs, wire.error(exc.type, exc.code, txid, raw))
        except BadMessage as exc:
            vs.stats["refused"] += 1
            LOG.info("%s: %s@%016x: malformed (%s)", self.cfg.name, vs.tenant, vs.dpid, exc)
            self._up(vs, wire.error(exc.etype, exc.code, txid, raw))
        except Exception:  # noqa: BLE001  our bug: said loudly; the tenant gets an error
            LOG.exception("%s: %s@%016x: a request of type %d failed", self.cfg.name,
                          vs.tenant, vs.dpid, msg_type)
            self.errors.append(f"request of type {msg_type} failed")
            self._up(vs, wire.error(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_EPERM, txid, raw))

    def _forward(self, vs: VSwitch, link: SwitchLink, raw: bytes, txid: int,
                 reply: bool) -> None:
        xid = link.next_xid()
        pend = Pending(vs, txid)
        if reply:
            link.pending[xid] = pend
        else:
            link.no_reply[xid] = pend
            if len(link.no_reply) > NO_REPLY_MEMORY:
                link.no_reply.popitem(last=False)
        link.conn.send(wire.with_xid(raw, xid))

    def _virtual(self, vs: VSwitch, raw: bytes, msg_type: int, txid: int,
                 silent: bool = False) -> None:
        """What a tenant sets on its own virtual switch, answered here (`silent`: the
        settings the proxy carried over, already answered by the initial)."""
        if msg_type == ofp.OFPT_SET_CONFIG:
            vs.config_flags, vs.miss_send_len = ofcodec.set_config(raw)
        elif msg_type == ofp.OFPT_GET_CONFIG_REQUEST:
            self._up(vs, ofcodec.get_config_reply(vs.config_flags, vs.miss_send_len, txid))
        elif msg_type == ofp.OFPT_SET_ASYNC:
            vs.async_cfg = ofcodec.set_async(raw)
        elif msg_type == ofp.OFPT_GET_ASYNC_REQUEST:
            self._up(vs, ofcodec.get_async_reply(vs.async_cfg, txid))
        elif msg_type == ofp.OFPT_ROLE_REQUEST:
            role, generation_id = ofcodec.role_request(raw)
            if role != ofp.OFPCR_ROLE_NOCHANGE:
                vs.role = role
            if not silent:
                self._up(vs, ofcodec.role_reply(vs.role, generation_id, txid))

    # -- management ---------------------------------------------------------------------------------
    async def take_over(self, dpid: int, host: str, port: int,
                        tenants: Optional[List[str]] = None,
                        timeout: Optional[float] = None) -> Dict[str, Any]:
        """Take switch `dpid` (its passive port at host:port) over, for its tenants (all by
        default); returns each tenant's outcome."""
        known = self.slicer.tenants_on(dpid)
        if not known:
            raise ValueError(f"no slice of this instance has a port on switch {dpid:#x}")
        tenants = list(tenants) if tenants else known
        unknown = sorted(set(tenants) - set(known))
        if unknown:
            raise ValueError(f"tenant(s) {', '.join(unknown)} have no port on {dpid:#x}")
        busy = [t for t in tenants if (dpid, t) in self.vswitches]
        if busy:
            raise ValueError(f"this instance already serves {', '.join(busy)} on {dpid:#x}")
        self.passive[dpid] = (host, port)
        loop = asyncio.get_running_loop()
        started = self.clock()
        outcomes: Dict[str, asyncio.Future] = {}
        for tenant in tenants:
            mid = new_mid()
            vs = VSwitch(dpid, tenant, mig.Target(mid, deadline_s=self.cfg.deadline_s),
                         done=loop.create_future())
            self.vswitches[(dpid, tenant)] = vs
            outcomes[tenant] = vs.done
            self.tasks.spawn(self._attach(vs, "take_over", mid))
        wait = timeout if timeout is not None else self.cfg.deadline_s * 4 + 5
        done, _ = await asyncio.wait(list(outcomes.values()), timeout=wait)
        return {"switch": f"{dpid:#x}", "seconds": round(self.clock() - started, 4),
                "tenants": {t: (f.result() if f in done else "timeout")
                            for t, f in outcomes.items()}}

    def status(self) -> Dict[str, Any]:
        return {"name": self.cfg.name, "pid": os.getpid(),
                "listen": f"{self.cfg.listen_host}:{self.cfg.listen_port}",
                "switches": {f"{d:#x}": {"passive": link.passive,
                                         "standby": link.standby is not None,
                                         "tenants": sorted(link.vswitches)}
                             for d, link in sorted(self.links.items())},
                "released": [f"{d:#x}" for d in sorted(self.released)],
                "vswitches": [{"switch": f"{vs.dpid:#x}", "tenant": vs.tenant,
                               "machine": type(vs.machine).__name__,
                               "state": vs.machine.state, "proxy": vs.proxy is not None,
                               **vs.stats}
                              for vs in self.vswitches.values()],
                "errors": list(self.errors)}


_VIRTUAL = {ofp.OFPT_SET_CONFIG, ofp.OFPT_GET_CONFIG_REQUEST, ofp.OFPT_SET_ASYNC,
            ofp.OFPT_GET_ASYNC_REQUEST, ofp.OFPT_ROLE_REQUEST}
