"""A rate-controlled OpenFlow request generator standing in for a tenant controller, like the
paper's extended OFTest: it listens as a controller, and once a switch (OVS directly, or the
hypervisor proxy) has connected it sends FEATURES_REQUEST on an absolute schedule and times each
reply by its xid.

Requests go out in due order on a 1 ms tick: a late wake-up sends what fell due meanwhile
rather than stretching every later gap, so the offered rate holds on average. Each request's
time is when it was written (the generator's own lateness is not the path's latency); a
generator that cannot keep up shows as a longer sending span, which the achieved rate counts.
"""
from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Dict, List, Optional, Tuple

from hypervisor import wire
from hypervisor.wire import Conn, ofp, parser

XID_BASE = 0x10000000  # the generator's xids: XID_BASE + request index
PROBE_XID_BASE = 0x70000000  # a probe's, so a late probe reply is never taken for a request's


@dataclass
class Run:
    rate: float
    seconds: float
    sent: List[float] = field(default_factory=list)              # loop time of each request
    replied: Dict[int, float] = field(default_factory=dict)      # index -> loop time of reply
    start: float = 0.0
    events: Dict[str, float] = field(default_factory=dict)       # name -> loop time

    def latencies_ms(self) -> List[Optional[float]]:
        return [None if i not in self.replied else (self.replied[i] - t) * 1000.0
                for i, t in enumerate(self.sent)]


class Generator:
    def __init__(self) -> None:
        self.conn: Optional[Conn] = None
        self.connected = asyncio.Event()
        self.connects = 0
        self.server: Optional[asyncio.base_events.Server] = None
        self.run: Optional[Run] = None
        self.others: Dict[int, int] = {}   # message type -> count, of what else came

    async def listen(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.server = await asyncio.start_server(self._accept, host, port)
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server:
            self.server.close()
        if self.conn:
            self.conn.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Conn(reader, writer, "switch side")
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await conn.handshake()
        except (wire.BadMessage, OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            conn.close()
            return
        if self.conn is not None:
            self.conn.close()
        self.conn, self.connects = conn, self.connects + 1
        self.connected.set()
        loop = asyncio.get_running_loop()
        try:
            while True:
                raw = await conn.recv()
                msg_type, xid = raw[1], wire.header(raw)[3]
                if msg_type == ofp.OFPT_FEATURES_REPLY and self.run is not None:
                    index = xid - (XID_BASE if self.run.seconds else PROBE_XID_BASE)
                    if 0 <= index < len(self.run.sent) and index not in self.run.replied:
                        self.run.replied[index] = loop.time()
                elif msg_type == ofp.OFPT_ECHO_REQUEST:
                    conn.send(wire.echo_reply(raw))
                else:
                    self.others[msg_type] = self.others.get(msg_type, 0) + 1
        except (asyncio.IncompleteReadError, ConnectionError, OSError, wire.BadMessage):
            pass
        conn.close()
        if self.conn is conn:
            self.conn = None
            self.connected.clear()

    async def probe(self, timeout: float = 5.0) -> float:
        """One request and its reply: the path works end to end (raises on timeout)."""
        loop = asyncio.get_running_loop()
        run = Run(rate=1, seconds=0)
        self.run = run
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            await asyncio.wait_for(self.connected.wait(), deadline - loop.time())
            index = len(run.sent)
            run.sent.append(loop.time())
            self.conn.send(wire.with_xid(_TEMPLATE, PROBE_XID_BASE + index))
            while loop.time() < min(deadline, run.sent[-1] + 0.5):
                if index in run.replied:
                    return (run.replied[index] - run.sent[index]) * 1000.0
                await asyncio.sleep(0.005)
        raise TimeoutError("no FEATURES_REPLY through the path")

    async def load(self, rate: float, seconds: float,
                   at: Tuple[Tuple[float, str, Callable[[], Awaitable[None]]], ...] = (),
                   grace: float = 1.0) -> Run:
        """Send `rate` requests a second for `seconds`; `at`: (offset s, name, coroutine fn)
        run concurrently at that offset, its start and end recorded in `run.events`."""
        loop = asyncio.get_running_loop()
        run = Run(rate, seconds)
        self.run = run
        total = int(round(rate * seconds))
        run.start = loop.time()
        tasks = [loop.create_task(self._at(run, offset, name, fn)) for offset, name, fn in at]
        gap = 1.0 / rate
        index = 0
        while index < total:
            now = loop.time()
            due = int((now - run.start) / gap) + 1
            conn = self.conn
            while index < min(due, total):
                run.sent.append(loop.time())
                if conn is not None:
                    conn.send(wire.with_xid(_TEMPLATE, XID_BASE + index))
                index += 1
            await asyncio.sleep(0.001)
        end = loop.time() + grace
        while loop.time() < end and len(run.replied) < total:
            await asyncio.sleep(0.01)
        await asyncio.sleep(max(0.0, end - loop.time()))  # late replies count as lost anyway
        for task in tasks:
            await task
        self.run = None
        return run

    async def _at(self, run: Run, offset: float, name: str,
                  fn: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, run.start + offset - loop.time()))
        run.events[f"{name}_start"] = loop.time()
        try:
            await fn()
        finally:
            run.events[f"{name}_end"] = loop.time()


_TEMPLATE = wire.encode(parser.OFPFeaturesRequest(wire.DESC), 0)
