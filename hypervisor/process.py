"""`python -m hypervisor --config CFG --control SOCK`: one hypervisor instance as a process.

Its management channel is a Unix socket (mode 0600, in the management's state directory): one
JSON request per line, one JSON answer per line.

    {"op": "status"}
    {"op": "take_over", "switch": "0x1", "passive": "127.0.0.1:6634",
     "tenants": ["t1"] (optional: every tenant with a port there), "timeout": 25 (optional)}
    {"op": "stop"}

Errors come back as {"error": "..."}. The instance advertises itself with zeroconf
(`<name>._sdnmig-hv._tcp.local.` on loopback, TXT: name, control, listen, scope) while it runs.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from hypervisor import aio
from hypervisor.instance import Config, Instance
from hypervisor.state import parse_dpid, parse_hostport

SERVICE_TYPE = "_sdnmig-hv._tcp.local."
LOG = logging.getLogger("hypervisor")


class Advert:
    """The instance's zeroconf service (sync zeroconf, so kept off the event loop's thread)."""

    def __init__(self, name: str, control: str, listen_port: int, scope: str) -> None:
        self.name, self.control, self.listen_port, self.scope = name, control, listen_port, scope
        self.zc: Any = None
        self.info: Any = None

    def register(self) -> None:
        from zeroconf import ServiceInfo, Zeroconf

        self.zc = Zeroconf(interfaces=["127.0.0.1"])
        self.info = ServiceInfo(
            SERVICE_TYPE, f"{self.name}.{SERVICE_TYPE}", port=self.listen_port,
            properties={"name": self.name, "control": self.control,
                        "listen": str(self.listen_port), "scope": self.scope,
                        "pid": str(os.getpid())},
            server=f"sdnmig-hv-{self.name}-{os.getpid()}.local.",
            addresses=[socket.inet_aton("127.0.0.1")])
        self.zc.register_service(self.info, allow_name_change=True)

    def close(self) -> None:
        if self.zc is not None:
            try:
                self.zc.unregister_service(self.info)
            finally:
                self.zc.close()


async def handle(inst: Instance, request: Dict[str, Any], stop: asyncio.Event) -> Any:
    op = request.get("op")
    if op == "status":
        return inst.status()
    if op == "stop":
        stop.set()
        return {"stopping": inst.cfg.name}
    if op == "take_over":
        unknown = set(request) - {"op", "switch", "passive", "tenants", "timeout"}
        if unknown:
            raise ValueError(f"take_over: unknown field(s) {', '.join(sorted(unknown))}")
        host, port = parse_hostport(request.get("passive"), "passive")
        tenants = request.get("tenants")
        if tenants is not None and (not isinstance(tenants, list)
                                    or not all(isinstance(t, str) for t in tenants)):
            raise ValueError("tenants: a list of tenant names")
        timeout = request.get("timeout")
        dpid = parse_dpid(request.get("switch"))
        if dpid is None:
            raise ValueError(f"switch {request.get('switch')!r}: a datapath id, e.g. \"0x1\"")
        return await inst.take_over(dpid, host, port, tenants,
                                    float(timeout) if timeout is not None else None)
    raise ValueError(f"unknown op {op!r}: status, take_over or stop")


async def amain(cfg: Config, control: Path, scope: str, advertise: bool) -> int:
    inst = Instance(cfg)
    await inst.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    aio.stop_on_signals(stop)
    server = await aio.serve_control(control, lambda request: handle(inst, request, stop))
    advert: Optional[Advert] = None
    if advertise:
        advert = Advert(cfg.name, str(control), cfg.listen_port, scope)
        try:
            await loop.run_in_executor(None, advert.register)
        except Exception as exc:  # noqa: BLE001  discovery is a convenience, not a must
            LOG.warning("%s: zeroconf advert failed: %s", cfg.name, exc)
            advert = None
    LOG.info("%s: ready (control %s)", cfg.name, control)
    await stop.wait()
    server.close()
    if advert is not None:
        await loop.run_in_executor(None, advert.close)
    await inst.stop()
    aio.remove(control)
    return 1 if inst.errors else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hypervisor", description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--control", required=True, type=Path, help="Unix socket to listen on")
    ap.add_argument("--scope", default="", help="deployment scope in the zeroconf TXT")
    ap.add_argument("--no-zeroconf", action="store_true")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = Config.load(args.config)
    except ValueError as exc:
        print(f"hypervisor: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(amain(cfg, args.control, args.scope or str(args.control.parent),
                                 not args.no_zeroconf))
    except ValueError as exc:  # a bad slice configuration
        print(f"hypervisor: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"hypervisor: {exc}", file=sys.stderr)
        return 2
