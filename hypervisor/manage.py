"""`python -m hypervisor.manage`: the management of a distributed hypervisor on one machine.

    proxy-start --listen HOST:PORT | proxy-stop
    configure --slices FILE.json --controllers t1=HOST:PORT ... [--deadline S]
    switch-add --bridge BR --passive-port P
    start NAME [--listen-port P] | stop NAME
    assign --switch BR --to NAME
    migrate --switch BR --to NAME [--tenants t1,t2] [--timeout S]
    status [--json] | discover [--timeout S] [--json]
    serve [--port P] [--host 127.0.0.1] [--token-file F]     the same operations over HTTP

Every command takes `--state DIR` (default /var/lib/sdnmig/hv), whose `state.json` (see
hypervisor.state) is all the management remembers, so it can itself be restarted at any time.
Processes are stopped by their recorded PID, checked against their command line, never by name.

The bridge's controller set is replaced in one `set-controller` call that keeps its passive port
(`ptcp:`): emptying the set, or filling an empty one, flushes the flow tables. `migrate` names the
target there only when every tenant ended active and no tenant of the bridge is left on another
instance, so a reconnecting switch goes to the instance that serves it, never back to the initial.

HTTP (loopback only, `Authorization: Bearer <token>`, token in `<state>/api.token`, 0600):

    GET /status    GET /discover?timeout=S    POST /configure {"slices","controllers","deadline_s"?}
    POST /proxy {"listen"}    DELETE /proxy
    POST /instances {"name","listen_port"?}    DELETE /instances/NAME
    POST /switches {"bridge","passive_port"}    POST /assign {"switch","to"}
    POST /migrate {"switch","to","tenants"?,"timeout"?}

Errors are {"error": "..."}: 400 bad input (or a refused operation), 401, 404, 405, 411, 413.
Errors the operator can act on are one line on the command line too, with exit status 2;
`migrate` exits 1 when the bridge's configuration was left alone.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import socket
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Tuple
from urllib.parse import parse_qs, urlsplit

from hypervisor import state as hs
from hypervisor.state import InstanceRec, ProxyRec, State, SwitchRec
from sdnmig import api, instances, ovs
from sdnmig.errors import SdnmigError
from sdnmig.ops import table

DEFAULT_STATE = Path("/var/lib/sdnmig/hv")
DEFAULT_PORT = 8766
READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 5.0
ASK_TIMEOUT_S = 3.0
MAX_ANSWER = 4 * 1024 * 1024
MAX_TIMEOUT_S = 600.0
DISCOVER_S = 3.0


class Unreachable(SdnmigError):
    """A control socket that did not answer (not there, refused, silent, or not JSON)."""


def ask(sock: Path, request: Dict[str, Any], timeout: float) -> Dict[str, Any]:
    """One request on a process's control socket, one JSON answer."""
    buf = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(sock))
            s.sendall(json.dumps(request).encode() + b"\n")
            while not buf.endswith(b"\n") and len(buf) < MAX_ANSWER:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except OSError as exc:
        raise Unreachable(f"{sock}: {exc.strerror or exc or type(exc).__name__}") from None
    if not buf.endswith(b"\n"):
        raise Unreachable(f"{sock}: closed without an answer")
    try:
        answer = json.loads(buf)
    except ValueError:
        raise Unreachable(f"{sock}: the answer is not JSON") from None
    if not isinstance(answer, dict):
        raise Unreachable(f"{sock}: the answer is not a JSON object")
    return answer


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")


def browse(scope: str, window: float, expect: Set[str]) -> List[Dict[str, str]]:
    """The instances of `scope` that zeroconf shows on loopback: polled until every name in
    `expect` answered or `window` seconds passed."""
    from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

    from hypervisor.process import SERVICE_TYPE

    zc = Zeroconf(interfaces=[hs.LOOPBACK])
    present: Dict[str, bool] = {}

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        present[name] = state_change is not ServiceStateChange.Removed

    browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
    found: Dict[str, Dict[str, str]] = {}
    foreign: Set[str] = set()
    deadline = time.monotonic() + window
    try:
        while True:
            for name, up in list(present.items()):
                if not up:
                    found.pop(name, None)
                elif name not in found and name not in foreign:
                    info = zc.get_service_info(SERVICE_TYPE, name, timeout=500)
                    if info is None:
                        continue
                    txt = {_text(k): _text(v) for k, v in info.properties.items()}
                    if txt.get("scope") != scope:
                        foreign.add(name)
                    else:
                        found[name] = dict(txt, service=name, port=str(info.port))
            seen = {d.get("name") for d in found.values()}
            if (expect and expect <= seen) or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    finally:
        browser.cancel()
        zc.close()
    return sorted(found.values(), key=lambda d: d.get("name", ""))


@dataclass
class Deps:
    """What the management does to the machine; tests put fakes here."""

    vsctl: Callable[..., str] = ovs.vsctl
    bridge_dpids: Callable[[], Dict[str, int]] = ovs.bridge_dpids
    spawn: Callable[[List[str], Path], Any] = instances._spawn   # -> a Popen
    ask: Callable[[Path, Dict[str, Any], float], Dict[str, Any]] = ask
    alive: Callable[[Optional[int], str], bool] = instances.alive
    terminate: Callable[..., None] = instances._signal_and_wait  # (pid, marker, timeout)
    port_free: Callable[[int], bool] = instances.port_free
    browse: Callable[[str, float, Set[str]], List[Dict[str, str]]] = browse
    dpid_wait_s: float = 3.0   # a new bridge's datapath_id is filled in shortly after add-br


class Manager:
    """The operations, shared by the command line and the HTTP API."""

    def __init__(self, state_dir: Path, deps: Optional[Deps] = None) -> None:
        self.root = Path(state_dir).absolute()
        self.deps = deps or Deps()
        self._children: Dict[int, Any] = {}   # pid -> Popen of what this process spawned

    # -- files and records ------------------------------------------------------------------------
    def config_path(self, name: str) -> Path:
        return self.root / f"{name}.json"

    def control(self, name: str) -> Path:
        return hs.sock_path(self.root / f"{name}.sock")

    def proxy_control(self) -> Path:
        return hs.sock_path(self.root / "proxy.sock")

    def _marker(self, name: str) -> str:
        return f"--config {self.config_path(name)}"

    def _proxy_marker(self) -> str:
        return f"--control {self.proxy_control()}"

    def read(self) -> State:
        return hs.load(self.root)

    @contextmanager
    def update(self) -> Iterator[State]:
        """The state under an exclusive lock, saved if the block ends without an exception."""
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.root / "state.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            st = hs.load(self.root)
            yield st
            hs.save(self.root, st)

    def _instance(self, st: State, name: Any, running: bool = True) -> InstanceRec:
        rec = st.instances.get(name) if isinstance(name, str) else None
        if rec is None:
            known = ", ".join(sorted(st.instances)) or "none yet"
            raise SdnmigError(f"unknown instance {name!r} (known: {known})")
        if running and not self.deps.alive(rec.pid, self._marker(name)):
            raise SdnmigError(f"instance {name} is not running: start it first")
        return rec

    def _switch(self, st: State, switch: Any) -> Tuple[str, SwitchRec]:
        if isinstance(switch, str) and switch in st.switches:
            return switch, st.switches[switch]
        dpid = hs.parse_dpid(switch)
        for bridge, rec in st.switches.items():
            if dpid is not None and rec.dpid == dpid:
                return bridge, rec
        known = ", ".join(sorted(st.switches)) or "none yet: run switch-add"
        raise SdnmigError(f"unknown switch {switch!r} (known: {known})")

    def _port_unused(self, st: State, port: int, what: str, instance: str = "",
                     proxy: bool = False) -> None:
        """Refuse a port the deployment already uses (the proxy, a passive port, an instance
        that runs or that a bridge names); whether another process holds it is port_free's."""
        if not proxy and st.proxy is not None \
                and hs.parse_hostport(st.proxy.listen, "proxy")[1] == port:
            raise SdnmigError(f"{what} {port} is taken: the proxy listens there")
        for bridge, sw in st.switches.items():
            if hs.parse_hostport(sw.passive, "passive")[1] == port:
                raise SdnmigError(f"{what} {port} is taken: the passive port of {bridge}")
        for name, rec in st.instances.items():
            serves = any(s.served_by == name for s in st.switches.values())
            if name != instance and rec.listen_port == port and (
                    serves or self.deps.alive(rec.pid, self._marker(name))):
                raise SdnmigError(f"{what} {port} is taken: instance {name} listens there")

    # -- processes --------------------------------------------------------------------------------
    def _launch(self, cmd: List[str], log: Path, ctl: Path, marker: str, what: str) -> int:
        """Spawn, then wait until the control socket answers; a process that does not is
        stopped again."""
        try:
            ctl.unlink()
        except FileNotFoundError:
            pass
        proc = self.deps.spawn(cmd, log)
        self._children[proc.pid] = proc

        def ready() -> bool:
            if proc.poll() is not None:
                raise SdnmigError(f"{what} exited at start: {instances._tail(log) or 'no log'} "
                                  f"(log: {log})")
            try:
                self.deps.ask(ctl, {"op": "status"}, 1.0)
            except Unreachable:
                return False
            return True

        try:
            if not instances._wait(ready, READY_TIMEOUT_S, 0.1):
                raise SdnmigError(f"{what}: no answer on {ctl} after {READY_TIMEOUT_S:.0f} s "
                                  f"(log: {log})")
        except SdnmigError:
            self._halt(proc.pid, marker, ctl)
            raise
        return int(proc.pid)

    def _halt(self, pid: Optional[int], marker: str, ctl: Path) -> bool:
        """Ask the process to stop, then SIGTERM (and SIGKILL) it by PID after a grace period.
        False if it was not running."""
        child = self._children.pop(pid, None) if pid else None
        was = self.deps.alive(pid, marker)
        if was:
            try:
                self.deps.ask(ctl, {"op": "stop"}, ASK_TIMEOUT_S)
            except Unreachable:
                pass
            instances._wait(lambda: not self.deps.alive(pid, marker), STOP_GRACE_S, 0.05)
            self.deps.terminate(pid, marker, STOP_GRACE_S)
        if child is not None:
            child.poll()   # reap it (the HTTP server outlives what it starts)
        return was

    def _status_of(self, alive: bool, ctl: Path) -> Dict[str, Any]:
        if not alive:
            return {}
        try:
            return {"status": self.deps.ask(ctl, {"op": "status"}, ASK_TIMEOUT_S)}
        except Unreachable as exc:
            return {"error": str(exc)}

    # -- operations -------------------------------------------------------------------------------
    def proxy_start(self, listen: Any) -> Dict[str, Any]:
        _host, port = hs.parse_hostport(listen, "proxy address")
        ctl, log = self.proxy_control(), self.root / "proxy.log"
        with self.update() as st:
            if st.proxy is not None and self.deps.alive(st.proxy.pid, self._proxy_marker()):
                raise SdnmigError(f"the proxy is already running on {st.proxy.listen} "
                                  f"(pid {st.proxy.pid}): proxy-stop first")
            users = [n for n, r in st.instances.items()
                     if self.deps.alive(r.pid, self._marker(n))]
            if st.proxy is not None and st.proxy.listen != listen and users:
                raise SdnmigError(f"instance(s) {', '.join(sorted(users))} use the proxy at "
                                  f"{st.proxy.listen}: start it there, or stop them first")
            self._port_unused(st, port, "proxy port", proxy=True)
            if not self.deps.port_free(port):
                raise SdnmigError(f"proxy port {port} is taken by another process")
            cmd = [sys.executable, "-m", "proxy", "--listen", listen, "--control", str(ctl),
                   "--deadline", f"{st.deadline_s:g}"]
            pid = self._launch(cmd, log, ctl, self._proxy_marker(), "proxy")
            st.proxy = ProxyRec(listen, pid)
        return {"proxy": listen, "pid": pid, "control": str(ctl), "log": str(log)}

    def proxy_stop(self) -> Dict[str, Any]:
        with self.update() as st:
            if st.proxy is None:
                raise SdnmigError("no proxy recorded: nothing to stop")
            was = self._halt(st.proxy.pid, self._proxy_marker(), self.proxy_control())
            st.proxy.pid = None
        return {"proxy": st.proxy.listen, "stopped": was}

    def configure(self, slices: Any, controllers: Any,
                  deadline_s: Optional[float] = None) -> Dict[str, Any]:
        if not isinstance(controllers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in controllers.items()):
            raise SdnmigError("controllers: an object of tenant -> \"HOST:PORT\"")
        for tenant, addr in controllers.items():
            hs.parse_hostport(addr, f"controller of {tenant}")
        slices = hs.check_deployment(slices, controllers)
        if deadline_s is not None and (isinstance(deadline_s, bool) or not isinstance(
                deadline_s, (int, float)) or not 0 < deadline_s <= MAX_TIMEOUT_S):
            raise SdnmigError(f"deadline {deadline_s!r}: seconds, over 0 and at most "
                              f"{MAX_TIMEOUT_S:g}")
        with self.update() as st:
            st.slices, st.controllers = slices, dict(controllers)
            if deadline_s is not None:
                st.deadline_s = float(deadline_s)
            for sw in st.switches.values():   # tenants gone from the slices are no one's now
                sw.tenants = {t: n for t, n in sw.tenants.items()
                              if t in hs.tenants_on(slices, sw.dpid)}
                if sw.served_by:
                    for t in hs.tenants_on(slices, sw.dpid):
                        sw.tenants.setdefault(t, sw.served_by)
            running = sorted(n for n, r in st.instances.items()
                             if self.deps.alive(r.pid, self._marker(n)))
        out: Dict[str, Any] = {"tenants": sorted(controllers), "controllers": controllers,
                               "deadline_s": st.deadline_s}
        if running:
            out["note"] = f"running instance(s) {', '.join(running)} keep their configuration " \
                          "until restarted"
        return out

    def switch_add(self, bridge: Any, passive_port: Any) -> Dict[str, Any]:
        if not isinstance(bridge, str) or not bridge or len(bridge) > 64:
            raise SdnmigError(f"bridge {bridge!r}: the name of an Open vSwitch bridge")
        port = hs.check_port(passive_port, "passive port")
        with self.update() as st:
            if bridge in st.switches:
                raise SdnmigError(f"switch {bridge} is already recorded (passive "
                                  f"{st.switches[bridge].passive})")
            self._port_unused(st, port, "passive port")
            mode = self.deps.vsctl("get-fail-mode", bridge).strip()
            if mode != "secure":
                raise SdnmigError(f"bridge {bridge} has fail_mode {mode or 'unset'}: run "
                                  f"'ovs-vsctl set-fail-mode {bridge} secure' (standalone "
                                  "turns it into a learning switch)")
            passive = f"{hs.LOOPBACK}:{port}"
            ptcp = f"ptcp:{port}:{hs.LOOPBACK}"
            configured = self.deps.vsctl("get-controller", bridge).split()
            if ptcp not in configured and not self.deps.port_free(port):
                raise SdnmigError(f"passive port {port} is taken by another process")
            dpid = self._dpid(bridge)
            for other, sw in st.switches.items():
                if sw.dpid == dpid:
                    raise SdnmigError(f"bridge {bridge} has the datapath id {dpid:#x} of {other}")
            st.switches[bridge] = SwitchRec(dpid, passive)
        return {"switch": bridge, "dpid": f"{dpid:#x}", "passive": passive,
                "tenants": hs.tenants_on(st.slices, dpid)}

    def _dpid(self, bridge: str) -> int:
        deadline = time.monotonic() + self.deps.dpid_wait_s
        while True:
            dpid = self.deps.bridge_dpids().get(bridge)
            if dpid or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if not dpid:
            raise SdnmigError(f"bridge {bridge} has no datapath id yet: is ovs-vswitchd running?")
        return dpid

    def start(self, name: Any, listen_port: Any = None) -> Dict[str, Any]:
        name = hs.check_name(name)
        ctl, cfg_path, log = self.control(name), self.config_path(name), self.root / f"{name}.log"
        with self.update() as st:
            rec = st.instances.get(name)
            if rec is not None and self.deps.alive(rec.pid, self._marker(name)):
                raise SdnmigError(f"duplicate name: instance {name} is already running "
                                  f"(pid {rec.pid})")
            if listen_port is None:
                if rec is None:
                    raise SdnmigError(f"a listen port is required for the new instance {name}")
                listen_port = rec.listen_port
            port = hs.check_port(listen_port, "listen port")
            serves = sorted(b for b, s in st.switches.items() if s.served_by == name)
            if rec is not None and port != rec.listen_port and serves:
                raise SdnmigError(f"{name} serves {', '.join(serves)} on port {rec.listen_port}:"
                                  " restart it there")
            self._port_unused(st, port, "listen port", instance=name)
            if not self.deps.port_free(port):
                raise SdnmigError(f"listen port {port} is taken by another process")
            cfg = hs.instance_config(st, name, port)
            tmp = cfg_path.with_name(f".{cfg_path.name}.tmp")
            tmp.write_text(json.dumps(cfg, indent=2) + "\n")
            tmp.replace(cfg_path)
            cmd = [sys.executable, "-m", "hypervisor", "--config", str(cfg_path),
                   "--control", str(ctl), "--scope", str(self.root)]
            pid = self._launch(cmd, log, ctl, self._marker(name), f"instance {name}")
            st.instances[name] = InstanceRec(port, pid)
        return {"name": name, "pid": pid, "listen": f"{hs.LOOPBACK}:{port}",
                "control": str(ctl), "config": str(cfg_path), "log": str(log)}

    def stop(self, name: Any) -> Dict[str, Any]:
        with self.update() as st:
            rec = self._instance(st, name, running=False)
            was = self._halt(rec.pid, self._marker(name), self.control(name))
            rec.pid = None
            serves = sorted(b for b, s in st.switches.items() if s.served_by == name)
        return {"name": name, "stopped": was, "serves": serves}

    def assign(self, switch: Any, to: Any) -> Dict[str, Any]:
        with self.update() as st:
            bridge, sw = self._switch(st, switch)
            rec = self._instance(st, to)
            args = hs.set_controller_args(bridge, rec.listen_port, sw.passive)
            self.deps.vsctl(*args)
            sw.served_by = to
            sw.tenants = {t: to for t in hs.tenants_on(st.slices, sw.dpid)}
        return {"switch": bridge, "dpid": f"{sw.dpid:#x}", "served_by": to,
                "tenants": sw.tenants, "vsctl": args}

    def migrate(self, switch: Any, to: Any, tenants: Any = None,
                timeout: Any = None) -> Dict[str, Any]:
        """take_over on the target; the bridge then names the target if it serves every
        tenant there (else the configuration is left alone: the initial still serves)."""
        st = self.read()
        bridge, sw = self._switch(st, switch)
        self._instance(st, to)
        if sw.served_by is None:
            raise SdnmigError(f"switch {bridge} is not served by any instance: assign it first")
        on_switch = hs.tenants_on(st.slices, sw.dpid)
        if tenants is not None:
            if not isinstance(tenants, list) or not tenants or not all(
                    isinstance(t, str) for t in tenants):
                raise SdnmigError("tenants: a non-empty list of tenant names")
            unknown = sorted(set(tenants) - set(on_switch))
            if unknown:
                raise SdnmigError(f"tenant(s) {', '.join(unknown)} have no port on {bridge}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(
                timeout, (int, float)) or not 0 < timeout <= MAX_TIMEOUT_S):
            raise SdnmigError(f"timeout {timeout!r}: seconds, over 0 and at most "
                              f"{MAX_TIMEOUT_S:g}")
        wanted = tenants if tenants is not None else on_switch
        if wanted and all(sw.tenants.get(t) == to for t in wanted):
            raise SdnmigError(f"{to} already serves {', '.join(wanted)} on {bridge}")
        request: Dict[str, Any] = {"op": "take_over", "switch": f"{sw.dpid:#x}",
                                   "passive": sw.passive}
        if tenants is not None:
            request["tenants"] = tenants
        if timeout is not None:
            request["timeout"] = timeout
        wait = (timeout if timeout is not None else st.deadline_s * 4 + 5) + 10
        answer = self.deps.ask(self.control(to), request, wait)
        if "error" in answer:
            raise SdnmigError(f"{to}: {answer['error']}")
        outcomes = answer.get("tenants")
        if not isinstance(outcomes, dict) or not outcomes:
            raise SdnmigError(f"{to}: a take-over answer without tenants: {answer}")
        return dict(answer, **self._after_take_over(bridge, to, outcomes))

    def _after_take_over(self, bridge: str, to: str, outcomes: Dict[str, Any]) -> Dict[str, Any]:
        with self.update() as st:
            sw, rec = st.switches[bridge], self._instance(st, to, running=False)
            for tenant, outcome in outcomes.items():
                if outcome == "active":
                    sw.tenants[tenant] = to
            failed = sorted(t for t, o in outcomes.items() if o != "active")
            left = sorted(t for t, n in sw.tenants.items() if n != to)
            out: Dict[str, Any] = {"set_controller": False}
            if failed:
                out["note"] = f"tenant(s) {', '.join(failed)} did not end active: {bridge} " \
                              f"keeps naming {sw.served_by}"
            elif left:
                out["note"] = f"tenant(s) {', '.join(left)} still served by another instance: " \
                              f"{bridge} keeps naming {sw.served_by}"
            else:
                try:
                    self.deps.vsctl(*hs.set_controller_args(bridge, rec.listen_port,
                                                            sw.passive))
                except SdnmigError as exc:
                    out["note"] = f"took over, but {bridge} could not be pointed at {to}: {exc}"
                else:
                    sw.served_by, out["set_controller"] = to, True
            out["served_by"] = sw.served_by
        return out

    def status(self) -> Dict[str, Any]:
        st = self.read()
        insts: Dict[str, Any] = {}
        for name, rec in sorted(st.instances.items()):
            up = self.deps.alive(rec.pid, self._marker(name))
            insts[name] = {"listen": f"{hs.LOOPBACK}:{rec.listen_port}", "pid": rec.pid,
                           "alive": up, **self._status_of(up, self.control(name))}
        proxy: Optional[Dict[str, Any]] = None
        if st.proxy is not None:
            up = self.deps.alive(st.proxy.pid, self._proxy_marker())
            proxy = {"listen": st.proxy.listen, "pid": st.proxy.pid, "alive": up,
                     **self._status_of(up, self.proxy_control())}
        return {"state_dir": str(self.root), "proxy": proxy, "instances": insts,
                "switches": {b: {"dpid": f"{s.dpid:#x}", "passive": s.passive,
                                 "served_by": s.served_by, "tenants": s.tenants}
                             for b, s in sorted(st.switches.items())},
                "serving": hs.serving_table(st, (proxy or {}).get("status"))}

    def discover(self, timeout: Any = DISCOVER_S) -> Dict[str, Any]:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                or not 0 < timeout <= 60:
            raise SdnmigError(f"timeout {timeout!r}: seconds, over 0 and at most 60")
        st = self.read()
        up = {n: r for n, r in st.instances.items() if self.deps.alive(r.pid, self._marker(n))}
        found = self.deps.browse(str(self.root), float(timeout), set(up))
        for ad in found:
            rec = up.get(ad.get("name", ""))
            ad["alive"] = rec is not None and str(rec.pid) == ad.get("pid")
        return {"scope": str(self.root), "adverts": found}


# -- HTTP -----------------------------------------------------------------------------------------

def _fields(body: Dict[str, Any], required: Sequence[str], optional: Sequence[str] = ()) -> None:
    allowed = set(required) | set(optional)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise api.HttpError(400, f"unknown field(s) {', '.join(unknown)}: use "
                                 f"{', '.join(sorted(allowed))}")
    missing = [f for f in required if f not in body]
    if missing:
        raise api.HttpError(400, f"missing field(s) {', '.join(missing)}")


def _discover(m: Manager, body: Dict[str, Any], query: Dict[str, List[str]], _: str) -> Any:
    raw = (query.get("timeout") or [str(DISCOVER_S)])[-1]
    try:
        timeout = float(raw)
    except ValueError:
        raise api.HttpError(400, f"timeout {raw!r} is not a number of seconds") from None
    return m.discover(timeout)


def _configure(m: Manager, body: Dict[str, Any], query: Any, _: str) -> Any:
    _fields(body, ["slices", "controllers"], ["deadline_s"])
    return m.configure(body["slices"], body["controllers"], body.get("deadline_s"))


def _proxy_start(m: Manager, body: Dict[str, Any], query: Any, _: str) -> Any:
    _fields(body, ["listen"])
    return m.proxy_start(body["listen"])


def _start(m: Manager, body: Dict[str, Any], query: Any, _: str) -> Any:
    _fields(body, ["name"], ["listen_port"])
    return m.start(body["name"], body.get("listen_port"))


def _switch_add(m: Manager, body: Dict[str, Any], query: Any, _: str) -> Any:
    _fields(body, ["bridge", "passive_port"])
    return m.switch_add(body["bridge"], body["passive_port"])


def _assign(m: Manager, body: Dict[str, Any], query: Any, _: str) -> Any:
    _fields(body, ["switch", "to"])
    return m.assign(body["switch"], body["to"])


def _migrate(m: Manager, body: Dict[str, Any], query: Any, _: str) -> Any:
    _fields(body, ["switch", "to"], ["tenants", "timeout"])
    return m.migrate(body["switch"], body["to"], body.get("tenants"), body.get("timeout"))


Route = Callable[[Manager, Dict[str, Any], Dict[str, List[str]], str], Any]
INSTANCE = "/instances/"
ROUTES: Dict[str, Dict[str, Route]] = {
    "/status": {"GET": lambda m, b, q, _: m.status()},
    "/discover": {"GET": _discover},
    "/configure": {"POST": _configure},
    "/proxy": {"POST": _proxy_start, "DELETE": lambda m, b, q, _: m.proxy_stop()},
    "/instances": {"POST": _start},
    INSTANCE + "NAME": {"DELETE": lambda m, b, q, name: m.stop(name)},
    "/switches": {"POST": _switch_add},
    "/assign": {"POST": _assign},
    "/migrate": {"POST": _migrate},
}


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: Tuple[str, int], manager: Manager, token: str) -> None:
        self.manager = manager
        self.token = token.encode()
        super().__init__(address, Handler)


class Handler(api.Handler):
    """sdnmig.api's handler (token check, body limits, JSON errors), with these routes."""

    server: Server
    server_version = "sdnmig-hv-manage"

    def _dispatch(self, method: str) -> Any:
        if not self._authorized():
            raise api.HttpError(401, "missing or wrong token: send 'Authorization: Bearer "
                                     "<token>'")
        url = urlsplit(self.path)
        path, name = url.path, ""
        if path.startswith(INSTANCE) and path != INSTANCE:
            path, name = INSTANCE + "NAME", path[len(INSTANCE):]
        methods = ROUTES.get(path)
        if methods is None:
            raise api.HttpError(404, f"no such path {url.path}: use "
                                     f"{', '.join(sorted(ROUTES))}")
        if method not in methods:
            raise api.HttpError(405, f"{url.path} takes {' or '.join(sorted(methods))}, "
                                     f"not {method}")
        body = self._body() if method == "POST" else {}
        return methods[method](self.server.manager, body, parse_qs(url.query), name)


def make_server(manager: Manager, token: str, host: str = hs.LOOPBACK,
                port: int = DEFAULT_PORT) -> Server:
    """A bound server (port 0: a free one, see server_address); loopback only, since it starts
    processes and re-points switches."""
    if not api._is_loopback(host) or ":" in host:
        raise SdnmigError(f"refusing to serve on {host}: use a loopback IPv4 address")
    if not token:
        raise SdnmigError("an empty API token would let anyone in")
    try:
        return Server((host, port), manager, token)
    except OSError as exc:
        raise SdnmigError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None


# -- command line ---------------------------------------------------------------------------------

def _print_status(out: Dict[str, Any]) -> None:
    proxy = out["proxy"]
    if proxy is None:
        print("proxy: none recorded")
    else:
        print(f"proxy: {proxy['listen']}  pid {proxy['pid'] or '-'}  "
              f"{'alive' if proxy['alive'] else 'not running'}"
              f"{'  ' + proxy['error'] if 'error' in proxy else ''}")
    rows = [["instance", "listen", "pid", "alive", "switches", "errors"]]
    for name, inst in out["instances"].items():
        st = inst.get("status") or {}
        rows.append([name, inst["listen"], inst["pid"] or "-", "yes" if inst["alive"] else "no",
                     ",".join(st.get("switches", {})) or "-",
                     inst.get("error") or ",".join(st.get("errors", [])) or "-"])
    print(table(rows) if len(rows) > 1 else "no instances")
    rows = [["switch", "dpid", "tenant", "served by", "taking over", "route", "from"]]
    rows += [[r["switch"], r["dpid"], r["tenant"], r["served_by"] or "-",
              r["taking_over"] or "-", r["route"] or "-", r["source"]] for r in out["serving"]]
    print(table(rows) if len(rows) > 1 else "no switch is served")


def _run(args: argparse.Namespace, m: Manager) -> int:
    cmd = args.cmd
    if cmd == "serve":
        token_file = args.token_file or m.root / api.TOKEN_FILE
        server = make_server(m, api.load_token(token_file), args.host, args.port)
        host, port = server.server_address[:2]
        print(f"serving on http://{host}:{port} (token in {token_file})", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        return 0
    if cmd == "configure":
        try:
            slices = json.loads(Path(args.slices).read_text())
        except (OSError, ValueError) as exc:
            raise SdnmigError(f"{args.slices}: {exc}") from None
        out = m.configure(slices, hs.parse_controllers(args.controllers), args.deadline)
    elif cmd == "status":
        out = m.status()
        if not args.json:
            _print_status(out)
            return 0
    elif cmd == "discover":
        out = m.discover(args.timeout)
        if not args.json:
            rows = [["instance", "listen", "pid", "alive", "control"]] + [
                [a.get("name"), a.get("listen"), a.get("pid"), "yes" if a["alive"] else "no",
                 a.get("control")] for a in out["adverts"]]
            print(table(rows) if out["adverts"] else "no instance of this state dir answered")
            return 0
    else:
        out = {
            "proxy-start": lambda: m.proxy_start(args.listen),
            "proxy-stop": m.proxy_stop,
            "switch-add": lambda: m.switch_add(args.bridge, args.passive_port),
            "start": lambda: m.start(args.name, args.listen_port),
            "stop": lambda: m.stop(args.name),
            "assign": lambda: m.assign(args.switch, args.to),
            "migrate": lambda: m.migrate(args.switch, args.to, args.tenants, args.timeout),
        }[cmd]()
    print(json.dumps(out, indent=2))
    return 1 if cmd == "migrate" and not out["set_controller"] else 0


def _tenant_list(text: str) -> List[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state", type=Path, default=argparse.SUPPRESS,
                        help=f"state directory (default {DEFAULT_STATE})")
    p = argparse.ArgumentParser(prog="python -m hypervisor.manage", parents=[common],
                                description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help_, parents=[common])

    add("proxy-start", "start the proxy").add_argument("--listen", required=True,
                                                       metavar="HOST:PORT")
    add("proxy-stop", "stop the proxy")
    c = add("configure", "store the slices and the tenants' controllers")
    c.add_argument("--slices", required=True, type=Path, help="a JSON list of slices")
    c.add_argument("--controllers", required=True, nargs="+", metavar="TENANT=HOST:PORT")
    c.add_argument("--deadline", type=float, help="migration deadline, seconds (default 5)")
    s = add("switch-add", "record an OVS bridge and its passive port")
    s.add_argument("--bridge", required=True)
    s.add_argument("--passive-port", required=True, type=int)
    s = add("start", "start a hypervisor instance")
    s.add_argument("name")
    s.add_argument("--listen-port", type=int, help="where switches connect (required the "
                                                   "first time)")
    add("stop", "stop a hypervisor instance").add_argument("name")
    s = add("assign", "point a bridge at an instance")
    s.add_argument("--switch", required=True, metavar="BR")
    s.add_argument("--to", required=True, metavar="NAME")
    s = add("migrate", "move a bridge's control path to another instance")
    s.add_argument("--switch", required=True, metavar="BR")
    s.add_argument("--to", required=True, metavar="NAME")
    s.add_argument("--tenants", type=_tenant_list, help="t1,t2 (default: every tenant there)")
    s.add_argument("--timeout", type=float, help="seconds to wait for the take-over")
    add("status", "processes, and who serves what").add_argument("--json", action="store_true")
    s = add("discover", "the instances zeroconf shows for this state dir")
    s.add_argument("--timeout", type=float, default=DISCOVER_S)
    s.add_argument("--json", action="store_true")
    s = add("serve", "the HTTP API")
    s.add_argument("--port", type=int, default=DEFAULT_PORT)
    s.add_argument("--host", default=hs.LOOPBACK)
    s.add_argument("--token-file", type=Path, help="default <state>/api.token")
    return p


def main(argv: Optional[Sequence[str]] = None, deps: Optional[Deps] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args, Manager(getattr(args, "state", DEFAULT_STATE), deps))
    except SdnmigError as exc:
        print(f"hv-manage: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hv-manage: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
