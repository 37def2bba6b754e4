"""The control-path migration bench: one OVS bridge, the hypervisor proxy and two hypervisor
instances as processes of their own, and, for the paper's testbed, user-space delay lines
(10 ms proxy-hypervisor, 5 ms hypervisor-switch, each way; `sdnmig.delayline`).

The tenant controller is the caller's (the request generator, or a learning app): it listens,
and the proxy connects to it. `migrate()` moves the switch's control path to the other instance
the way the management does: the target's take-over through the switch's passive port, then
one `set-controller` call naming the target and keeping the passive port. Everything started is
stopped by its own PID; the bridge has a unique name and is the only one deleted.
"""
from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from sdnmig import ovs
from sdnmig.instances import free_ports

HV_SWITCH_DELAY_MS = 5.0
PROXY_HV_DELAY_MS = 10.0
ROOT = Path(__file__).resolve().parent.parent


async def ask(sock: Path, request: Dict[str, Any], timeout: float = 30.0) -> Dict[str, Any]:
    reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(sock)), timeout)
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    if not line:
        raise ConnectionError(f"{sock}: no answer")
    return json.loads(line)


class Stack:
    def __init__(self, workdir: Path, tenants: Dict[str, str], dpid: int,
                 slices: Optional[List[Dict[str, Any]]] = None, delays: bool = False,
                 deadline_s: float = 5.0, port_base: int = 0) -> None:
        self.dir = Path(workdir)
        self.tenants, self.dpid, self.delays, self.deadline_s = tenants, dpid, delays, deadline_s
        self.slices = slices or [{"tenant": t, "ports": {f"{dpid:#x}": [n + 1]}}
                                 for n, t in enumerate(sorted(tenants))]
        self.bridge = "zcp" + os.urandom(3).hex()[:5]
        self.procs: Dict[str, asyncio.subprocess.Process] = {}
        self.serving = "hv1"
        self.port_base = port_base or 32000 + os.getpid() % 20000
        self.ports: Dict[str, int] = {}

    # -- start and stop --------------------------------------------------------------------------
    async def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        names = ["proxy", "hv1", "hv2", "passive", "r_proxy", "r_hv1", "r_hv2", "r_passive"]
        self.ports = dict(zip(names, free_ports(len(names), self.port_base)))
        ovs.vsctl("add-br", self.bridge, "--", "set", "bridge", self.bridge,
                  "datapath_type=netdev", "fail_mode=secure", "protocols=OpenFlow13",
                  f"other-config:datapath-id={self.dpid:016x}")
        try:
            await self._spawn("proxy", "-m", "proxy", "--listen",
                              f"127.0.0.1:{self.ports['proxy']}", "--control",
                              str(self.dir / "proxy.sock"), "--deadline", str(self.deadline_s))
            if self.delays:
                await self._relay("r_proxy", "proxy", PROXY_HV_DELAY_MS)
                for name in ("hv1", "hv2", "passive"):
                    await self._relay(f"r_{name}", name, HV_SWITCH_DELAY_MS)
            for name in ("hv1", "hv2"):
                cfg = {"name": name, "listen": {"host": "127.0.0.1", "port": self.ports[name]},
                       "proxy": {"host": "127.0.0.1", "port": self._via("proxy")},
                       "slices": self.slices, "controllers": self.tenants,
                       "deadline_s": self.deadline_s}
                (self.dir / f"{name}.json").write_text(json.dumps(cfg))
                await self._spawn(name, "-m", "hypervisor", "--config",
                                  str(self.dir / f"{name}.json"), "--control",
                                  str(self.dir / f"{name}.sock"), "--no-zeroconf")
            for name in ("proxy", "hv1", "hv2"):
                await self._ready(self.dir / f"{name}.sock")
            await self._point("hv1")
        except BaseException:
            await self.stop()
            raise

    def _via(self, name: str) -> int:
        return self.ports[f"r_{name}"] if self.delays else self.ports[name]

    async def _spawn(self, name: str, *args: str) -> None:
        log = open(self.dir / f"{name}.log", "ab")
        self.procs[name] = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=log, stderr=asyncio.subprocess.STDOUT, cwd=str(ROOT))
        log.close()

    async def _relay(self, name: str, to: str, delay_ms: float) -> None:
        await self._spawn(name, "-m", "sdnmig.delayline", "--listen",
                          f"127.0.0.1:{self.ports[name]}", "--to", f"127.0.0.1:{self.ports[to]}",
                          "--delay-ms", str(delay_ms))

    async def _ready(self, sock: Path, timeout: float = 15.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                await ask(sock, {"op": "status"}, 2.0)
                return
            except (OSError, ConnectionError, asyncio.TimeoutError):
                if loop.time() > deadline:
                    raise RuntimeError(f"{sock} did not answer in {timeout:.0f} s") from None
                await asyncio.sleep(0.05)

    async def _point(self, name: str) -> None:
        """One set-controller call: the instance, and the passive port kept (a remove-then-add
        would flush the flow tables)."""
        proc = await asyncio.create_subprocess_exec(
            "ovs-vsctl", "set-controller", self.bridge, f"tcp:127.0.0.1:{self._via(name)}",
            f"ptcp:{self.ports['passive']}:127.0.0.1", "--", "set", "bridge", self.bridge,
            "other-config:disable-in-band=true")
        if await proc.wait() != 0:
            raise RuntimeError(f"set-controller {self.bridge} failed")
        self.serving = name

    async def stop(self) -> List[str]:
        """Stop what was started; return the log lines that show an exception."""
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 5.0)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        try:
            ovs.vsctl("--if-exists", "del-br", self.bridge)
        except Exception:  # noqa: BLE001  teardown goes on
            pass
        return self.problems()

    def problems(self) -> List[str]:
        bad = []
        for name in self.procs:
            try:
                text = (self.dir / f"{name}.log").read_text(errors="replace")
            except OSError:
                continue
            bad += [f"{name}: {ln}" for ln in text.splitlines()
                    if "Traceback" in ln or "task failed" in ln]
        return bad

    # -- operations ------------------------------------------------------------------------------
    async def status(self, who: str) -> Dict[str, Any]:
        return await ask(self.dir / f"{who}.sock", {"op": "status"})

    async def migrate(self, tenants: Optional[List[str]] = None) -> Dict[str, Any]:
        """Move the switch to the other instance; the configuration follows only if every
        tenant ended active."""
        target = "hv2" if self.serving == "hv1" else "hv1"
        answer = await ask(self.dir / f"{target}.sock", {
            "op": "take_over", "switch": f"{self.dpid:#x}",
            "passive": f"127.0.0.1:{self._via('passive')}", "tenants": tenants}, 60.0)
        moved = "error" not in answer and all(
            v == "active" for v in answer.get("tenants", {}).values())
        if moved and not tenants:
            await self._point(target)
        answer.update(target=target, set_controller=moved and not tenants)
        return answer
