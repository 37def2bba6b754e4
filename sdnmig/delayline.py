"""A TCP relay that delays every byte by a fixed time each way: the paper's testbed delays
(10 ms proxy-hypervisor, 5 ms hypervisor-switch) in user space, since this machine has no netem
(PLATFORM.md). Order is kept: chunks leave in the order they came, each `delay` after it came.

    python -m sdnmig.delayline --listen 127.0.0.1:PORT --to 127.0.0.1:PORT --delay-ms 10
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import sys
from typing import Optional, Sequence


#: epoll rounds its timeout up to the millisecond, so a timer fires 0-1 ms late: aim half a
#: millisecond early, and the delay is right on average
EARLY_S = 0.0005


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: "asyncio.Queue[Optional[tuple]]" = asyncio.Queue()

    async def deliver() -> None:
        while True:
            item = await queue.get()
            if item is None:
                break
            due, data = item
            wait = due - loop.time() - EARLY_S
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = loop.create_task(deliver())
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            queue.put_nowait((loop.time() + delay, data))
    except (ConnectionError, OSError):
        pass
    queue.put_nowait(None)
    try:
        await sender
    except (ConnectionError, OSError):
        pass


async def relay(listen_host: str, listen_port: int, to_host: str, to_port: int,
                delay: float) -> asyncio.base_events.Server:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(to_host, to_port)
        except OSError:
            writer.close()
            return
        for w in (writer, up_writer):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(_pump(reader, up_writer, delay), _pump(up_reader, writer, delay))

    return await asyncio.start_server(client, listen_host, listen_port)


def _addr(text: str) -> tuple:
    host, _, port = text.rpartition(":")
    return host, int(port)


async def _main(args: argparse.Namespace) -> int:
    server = await relay(*_addr(args.listen), *_addr(args.to), args.delay_ms / 1000.0)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdnmig.delayline", description=__doc__)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--to", required=True)
    ap.add_argument("--delay-ms", type=float, required=True)
    args = ap.parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except (OSError, ValueError) as exc:
        print(f"delayline: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
