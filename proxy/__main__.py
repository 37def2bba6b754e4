"""`python -m proxy --listen HOST:PORT --control SOCK`: the hypervisor proxy as a process."""
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from hypervisor import aio
from hypervisor.state import parse_hostport
from sdnmig.errors import SdnmigError
from proxy.server import Proxy, handle


async def amain(host: str, port: int, control: Path, deadline_s: float) -> int:
    proxy = Proxy(host, port, deadline_s)
    await proxy.start()
    stop = asyncio.Event()
    aio.stop_on_signals(stop)
    server = await aio.serve_control(control, lambda request: handle(proxy, request, stop))
    logging.getLogger("proxy").info("proxy: ready (control %s)", control)
    await stop.wait()
    server.close()
    await proxy.stop()
    aio.remove(control)
    return 1 if proxy.errors else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m proxy", description=__doc__)
    ap.add_argument("--listen", required=True, help="host:port for hypervisor instances")
    ap.add_argument("--control", required=True, type=Path, help="Unix socket to listen on")
    ap.add_argument("--deadline", type=float, default=5.0, help="migration deadline, seconds")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        host, port = parse_hostport(args.listen, "--listen")
        return asyncio.run(amain(host, port, args.control, args.deadline))
    except (ValueError, OSError, SdnmigError) as exc:
        print(f"proxy: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
