"""Controller instances: one platform manager process plus its own Redis, started and stopped here.

Each instance lives in `<state_dir>/<id>/` (config file, Redis password, logs) and is recorded in
`<state_dir>/instances.json` with the PIDs it started, so `stop` ends exactly those processes (it
checks each PID's command line first, so a recycled PID is never signalled). Starting several
instances is all-or-nothing: if one fails, the ones already started are stopped again.

Each instance also runs a zeroconf advertiser (`sdnmig.discovery`, a separate process because the
platform's eventlet patching breaks zeroconf's asyncio thread), which follows `<id>/instance.json`.
The instances of one state dir share one more Redis, the bus (`<state_dir>/bus/`, recorded in
`<state_dir>/bus.json`), for their inter-controller messages; it stops with the last instance.
"""
from __future__ import annotations

import errno
import fcntl
import importlib.util
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Sequence

from ryu_apps import APPS
from sdnmig.errors import SdnmigError

if TYPE_CHECKING:
    import redis

REPO = Path(__file__).resolve().parent.parent
RYU_VENV = REPO / ".venv-ryu"
PLATFORMS = ("os_ken", "ryu")
READY_TIMEOUT_S = 20.0
BUS_PORT_START = 26379
RESERVED_IDS = ("bus",)  # `<state_dir>/bus/` is the bus's directory


def resolve_apps(names: Sequence[str]) -> List[str]:
    """Short names (see ryu_apps.APPS) or importable module paths -> module paths."""
    modules = []
    for name in names:
        if name in APPS:
            modules.append(APPS[name])
        elif "." in name and _module_exists(name):
            modules.append(name)
        else:
            raise SdnmigError(f"unknown app {name!r}: use one of {', '.join(sorted(APPS))} "
                              "or an importable module path")
    if not modules:
        raise SdnmigError("no app given: use --apps learning (or another app)")
    return modules


def _module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def manager_command(platform: str) -> List[str]:
    if platform == "os_ken":
        exe = Path(sys.executable).parent / "osken-manager"
        found = str(exe) if exe.exists() else shutil.which("osken-manager")
        if not found:
            raise SdnmigError("osken-manager not found: run 'sudo make install'")
        return [found]
    if platform == "ryu":
        exe = RYU_VENV / "bin" / "ryu-manager"
        if not exe.exists():
            raise SdnmigError(f"{exe} not found: run 'sudo make ryu-env' (needs Python 3.9)")
        return [str(exe)]
    raise SdnmigError(f"unknown platform {platform!r}: use one of {', '.join(PLATFORMS)}")


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_ports(count: int, start: int, taken: Sequence[int] = (),
               host: str = "127.0.0.1") -> List[int]:
    ports, port = [], start
    while len(ports) < count:
        if port > 65535:
            raise SdnmigError(f"no {count} free TCP ports from {start} on")
        if port not in taken and port_free(port, host):
            ports.append(port)
        port += 1
    return ports


@dataclass
class Instance:
    id: str
    of_port: int
    redis_port: int
    apps: List[str]
    master_of: str  # '*', '' or comma-separated dpids
    platform: str = "os_ken"
    host: str = "127.0.0.1"
    netns_pid: Optional[int] = None  # run inside this process's network namespace (mnexec -a)
    dir: str = ""
    controller_pid: Optional[int] = None
    redis_pid: Optional[int] = None
    extra_conf: Dict[str, str] = field(default_factory=dict)
    bus_host: str = ""
    bus_port: int = 0  # 0: no bus
    bus_password_file: str = ""
    advertiser_pid: Optional[int] = None
    discovery: bool = True  # run the zeroconf advertiser

    @property
    def instance_file(self) -> Path:
        """The instance as JSON, for its advertiser (rewritten when the controller restarts)."""
        return self.path / "instance.json"

    @property
    def path(self) -> Path:
        return Path(self.dir)

    @property
    def controller_log(self) -> Path:
        return self.path / "controller.log"

    @property
    def redis_password(self) -> str:
        return (self.path / "redis.password").read_text().strip()

    @property
    def target(self) -> str:
        return f"tcp:{self.host}:{self.of_port}"


class Registry:
    """The instances started under one state dir, persisted as JSON."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.file = self.state_dir / "instances.json"

    def load(self) -> Dict[str, Instance]:
        if not self.file.exists():
            return {}
        try:
            raw = json.loads(self.file.read_text())
            if not isinstance(raw, dict):
                raise ValueError(f"a JSON object was expected, not {type(raw).__name__}")
            return {k: Instance(**v) for k, v in raw.items()}
        except (ValueError, TypeError) as e:
            raise SdnmigError(f"{self.file} is damaged ({e}): stop its processes by PID, "
                              "then remove the file") from None

    def save(self, instances: Dict[str, Instance]) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps({k: asdict(v) for k, v in instances.items()}, indent=2))
        tmp.replace(self.file)


def _prefix(inst: Instance) -> List[str]:
    return ["mnexec", "-a", str(inst.netns_pid)] if inst.netns_pid else []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: Optional[int], marker: str) -> bool:
    """Is pid running *and* still the process we started (its command line names `marker`)?"""
    return bool(pid) and marker in _cmdline(pid) and not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _wait(pred, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def _signal_and_wait(pid: Optional[int], marker: str, timeout: float = 5.0) -> None:
    if not alive(pid, marker):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        if not _wait(lambda: not alive(pid, marker), timeout):
            os.kill(pid, signal.SIGKILL)
            _wait(lambda: not alive(pid, marker), 2.0)
    except ProcessLookupError:
        pass
    try:  # reap it if it is our child (a long-lived caller such as pytest)
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = [ln for ln in path.read_text(errors="replace").splitlines()
                if ln.strip() and "eventlet" not in ln.lower()]
    except OSError:
        return ""
    for ln in reversed(text):
        if ln.startswith("sdnmig:"):
            return ln[len("sdnmig:"):].strip()
    return " | ".join(text[-lines:])


def write_conf(inst: Instance) -> Path:
    conf = inst.path / "controller.conf"
    lines = ["[DEFAULT]", "[sdnmig]", f"instance_id = {inst.id}", f"redis_host = {inst.host}",
             f"redis_port = {inst.redis_port}",
             f"redis_password_file = {inst.path / 'redis.password'}",
             f"master_of = {inst.master_of}"]
    if inst.bus_port:
        lines += [f"bus_host = {inst.bus_host}", f"bus_port = {inst.bus_port}",
                  f"bus_password_file = {inst.bus_password_file}"]
    lines += [f"{k} = {v}" for k, v in inst.extra_conf.items()]
    conf.write_text("\n".join(lines) + "\n")
    return conf


def _secret(path: Path) -> str:
    """The random password kept in `path` (created 0600 on first use)."""
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(16))
    return path.read_text().strip()


def redis_conf(path: Path, *, host: str, port: int, password: str, persistent: bool) -> Path:
    """Write `path/redis.conf`. A persistent Redis (an instance's) keeps an append-only file with
    fsync every second, so the controller's acknowledged state survives the controller crashing
    (Redis itself is not expected to crash under a test); the bus keeps nothing on disk.
    Snapshots (DUMP) and the append-only file's RDB preamble are not compressed: see below."""
    conf = path / "redis.conf"
    durability = ["appendonly yes", "appendfsync everysec"] if persistent else ["appendonly no"]
    conf.write_text("\n".join([
        f"port {port}", f"bind {host}", "protected-mode yes", f"requirepass {password}",
        f"dir {path}", "save ''", *durability, f"logfile {path / 'redis.log'}", "daemonize no",
        # DUMP (a migration's snapshot) tries LZF on every string value over 20 bytes: 3 ms of a
        # 4.6 ms DUMP of a 1 MB value that does not compress. Loopback bytes are cheaper.
        "rdbcompression no",
        # keep the config path in the process title: `stop` checks it before signalling a PID
        'proc-title-template "{title} {listen-addr} {config-file}"', ""]))
    conf.chmod(0o600)
    return conf


def _run_redis(conf: Path, prefix: List[str], what: str, ping) -> int:
    """Start redis-server on `conf`, wait until `ping()` answers; return its PID."""
    if not shutil.which("redis-server"):
        raise SdnmigError("redis-server not found: run 'sudo make install'")
    proc = subprocess.Popen(prefix + ["redis-server", str(conf)], start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def ready() -> bool:
        if proc.poll() is not None:
            raise SdnmigError(f"{what}: Redis exited at start: "
                              f"{_tail(conf.parent / 'redis.log')}")
        try:
            return ping()
        except OSError:
            return False

    try:
        if not _wait(ready, READY_TIMEOUT_S):
            raise SdnmigError(f"{what}: Redis ({conf}) not ready after {READY_TIMEOUT_S:.0f} s")
    except BaseException:
        _signal_and_wait(proc.pid, str(conf))
        raise
    return proc.pid


def start_redis(inst: Instance) -> None:
    conf = redis_conf(inst.path, host=inst.host, port=inst.redis_port,
                      password=_secret(inst.path / "redis.password"), persistent=True)
    inst.redis_pid = _run_redis(conf, _prefix(inst), inst.id, lambda: redis_ping(inst))


def _ping(host: str, port: int, password: str, prefix: List[str]) -> bool:
    if prefix:
        out = subprocess.run(prefix + ["redis-cli", "-h", host, "-p", str(port),
                                       "--no-auth-warning", "-a", password, "ping"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() == "PONG"
    import redis  # only the instance manager needs it outside the apps

    try:
        return bool(redis.Redis(host=host, port=port, password=password,
                                socket_timeout=1).ping())
    except redis.RedisError:
        return False


def redis_ping(inst: Instance) -> bool:
    return _ping(inst.host, inst.redis_port, inst.redis_password, _prefix(inst))


def _spawn(cmd: List[str], log_path: Path, **env: str) -> subprocess.Popen:
    """A process in its own session, logging to `log_path`, that can import this repository."""
    full_env = dict(os.environ, PYTHONWARNINGS="ignore",
                    PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **env)
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, env=full_env,
                                cwd=str(REPO))


def write_instance_file(inst: Instance) -> None:
    tmp = inst.instance_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(inst), indent=2))
    tmp.replace(inst.instance_file)


def start_controller(inst: Instance) -> None:
    conf = write_conf(inst)
    cmd = _prefix(inst) + manager_command(inst.platform) + [
        "--config-file", str(conf), "--ofp-listen-host", inst.host,
        "--ofp-tcp-listen-port", str(inst.of_port)] + inst.apps
    proc = _spawn(cmd, inst.controller_log, SDNMIG_PLATFORM=inst.platform)
    inst.controller_pid = proc.pid

    def ready() -> bool:
        if proc.poll() is not None:
            raise SdnmigError(f"{inst.id}: controller exited at start: {_tail(inst.controller_log)}")
        return listening(inst)

    if not _wait(ready, READY_TIMEOUT_S, 0.1):
        raise SdnmigError(f"{inst.id}: controller not listening on {inst.of_port} after "
                          f"{READY_TIMEOUT_S:.0f} s (log: {inst.controller_log})")
    write_instance_file(inst)  # a running advertiser follows the new controller PID


def start_advertiser(inst: Instance) -> None:
    """The instance's zeroconf advertiser, in the instance's namespace (see sdnmig.discovery)."""
    cmd = _prefix(inst) + [sys.executable, "-m", "sdnmig.discovery", "advertise",
                           "--instance-json", str(inst.instance_file)]
    inst.advertiser_pid = _spawn(cmd, inst.path / "advertiser.log").pid


def stop_advertiser(inst: Instance) -> None:
    _signal_and_wait(inst.advertiser_pid, str(inst.instance_file))


def listening(inst: Instance) -> bool:
    if inst.netns_pid:
        out = subprocess.run(_prefix(inst) + ["ss", "-Hltn", f"sport = :{inst.of_port}"],
                             capture_output=True, text=True)
        return bool(out.stdout.strip())
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((inst.host, inst.of_port)) == 0


def stop_controller(inst: Instance) -> None:
    """Stop only the controller process; its Redis (the switch state) stays up."""
    _signal_and_wait(inst.controller_pid, str(inst.path / "controller.conf"))


def stop_instance(inst: Instance) -> None:
    """The advertiser first (its goodbye withdraws the instance), then the controller (so it
    stops writing), then its Redis."""
    stop_advertiser(inst)
    stop_controller(inst)
    _signal_and_wait(inst.redis_pid, str(inst.path / "redis.conf"))


def start_instance(inst: Instance) -> None:
    """Redis, the controller, its advertiser; on any failure, stop what was started and re-raise."""
    inst.path.mkdir(parents=True, exist_ok=True)
    try:
        start_redis(inst)
        start_controller(inst)
        if inst.discovery:
            start_advertiser(inst)
    except BaseException:
        stop_instance(inst)
        raise


def plan(count: int, apps: Sequence[str], state_dir: Path, *, of_port: int = 6653,
         redis_port: int = 16379, master: str = "first", platform: str = "os_ken",
         ids: Optional[Sequence[str]] = None, hosts: Optional[Sequence[str]] = None,
         netns_pids: Optional[Sequence[Optional[int]]] = None,
         taken: Sequence[int] = ()) -> List[Instance]:
    """Choose ids, free ports and roles for `count` new instances (nothing is started)."""
    if count < 1:
        raise SdnmigError("--count must be at least 1")
    modules = resolve_apps(apps)
    manager_command(platform)
    ids = list(ids) if ids else [f"c{i}" for i in range(1, count + 1)]
    if len(ids) != count or len(set(ids)) != count:
        raise SdnmigError("instance ids must be unique, one per instance")
    reserved = [i for i in ids if i in RESERVED_IDS]
    if reserved:
        raise SdnmigError(f"instance id {reserved[0]!r} is reserved: choose another")
    namespaced = bool(netns_pids and any(netns_pids))
    if namespaced:
        of_ports, redis_ports = [of_port] * count, [redis_port] * count
    else:
        of_ports = free_ports(count, of_port, taken)
        redis_ports = free_ports(count, redis_port, list(taken) + of_ports)
    masters = _master_split(ids, master)
    return [Instance(id=ids[i], of_port=of_ports[i], redis_port=redis_ports[i],
                     apps=list(modules), master_of=masters[ids[i]], platform=platform,
                     host=(hosts[i] if hosts else "127.0.0.1"),
                     netns_pid=(netns_pids[i] if netns_pids else None),
                     dir=str(Path(state_dir) / ids[i]))
            for i in range(count)]


def _master_split(ids: Sequence[str], master: str) -> Dict[str, str]:
    """'first' (default): the first instance masters every switch; 'none'; or 'ID=DPIDS;ID=DPIDS'."""
    if master == "first":
        return {i: ("*" if n == 0 else "") for n, i in enumerate(ids)}
    if master == "none":
        return {i: "" for i in ids}
    split = {i: "" for i in ids}
    seen: Dict[int, str] = {}
    named = set()
    for part in filter(None, (p.strip() for p in master.split(";"))):
        inst, _, dpids = part.partition("=")
        inst = inst.strip()
        if inst in named:
            raise SdnmigError(f"--master: {inst} is named twice: give all its switches at once "
                              f"({inst}=DPID,DPID)")
        named.add(inst)
        if inst not in split:
            raise SdnmigError(f"--master {part!r}: no instance {inst!r} (have {', '.join(ids)})")
        if dpids.strip() == "*":
            if len([p for p in master.split(";") if p.strip()]) > 1:
                raise SdnmigError("--master: an instance given '*' must be the only master")
            split[inst] = "*"
            continue
        for d in filter(None, (x.strip() for x in dpids.split(","))):
            try:
                dpid = int(d, 0)
            except ValueError:
                raise SdnmigError(f"--master: {d!r} is not a datapath id") from None
            if not 0 <= dpid < 1 << 64:
                raise SdnmigError(f"--master: {d!r} is out of range for a datapath id")
            if dpid in seen:
                raise SdnmigError(f"--master: switch {dpid:#x} given to both {seen[dpid]} and {inst}"
                                  " (a switch has exactly one master)")
            seen[dpid] = inst
        split[inst] = dpids.strip()
    return split


@dataclass
class Bus:
    """The deployment's shared Redis (inter-controller pub/sub), one per state dir."""

    host: str
    port: int
    pid: int
    dir: str

    @property
    def password_file(self) -> Path:
        return Path(self.dir) / "bus.password"

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    @property
    def conf(self) -> Path:
        return Path(self.dir) / "redis.conf"

    def client(self) -> redis.Redis:
        from ryu_apps.kvs import open_client

        return open_client(self.host, self.port, self.password, socket_timeout=5)


def _bus_record(state_dir: Path) -> Path:
    return Path(state_dir) / "bus.json"


def _read_bus(state_dir: Path) -> Optional[Bus]:
    try:
        return Bus(**json.loads(_bus_record(state_dir).read_text()))
    except (OSError, ValueError, TypeError):
        return None  # no record, or one this code cannot have written: no usable bus


def load_bus(state_dir: Path) -> Optional[Bus]:
    """The state dir's running bus, or None."""
    bus = _read_bus(state_dir)
    return bus if bus and alive(bus.pid, str(bus.conf)) else None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Serialise two `start`s on one state dir, so they share one bus instead of racing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def ensure_bus(state_dir: Path, host: str = "127.0.0.1", port_start: int = BUS_PORT_START,
               netns_pid: Optional[int] = None, *, taken: Sequence[int] = ()) -> Bus:
    """The state dir's bus: the running one, else a new one on a free port (not in `taken`).

    `netns_pid` runs it in that process's network namespace (there `port_start` is used as is).
    """
    state_dir = Path(state_dir)
    with _locked(state_dir / "bus.lock"):
        running = load_bus(state_dir)
        if running:
            return running
        path = state_dir / "bus"
        path.mkdir(parents=True, exist_ok=True)
        password = _secret(path / "bus.password")
        port = port_start if netns_pid else free_ports(1, port_start, taken, host)[0]
        prefix = ["mnexec", "-a", str(netns_pid)] if netns_pid else []
        conf = redis_conf(path, host=host, port=port, password=password, persistent=False)
        pid = _run_redis(conf, prefix, "bus", lambda: _ping(host, port, password, prefix))
        bus = Bus(host=host, port=port, pid=pid, dir=str(path))
        tmp = _bus_record(state_dir).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(bus), indent=2))
        tmp.replace(_bus_record(state_dir))
        return bus


def stop_bus(state_dir: Path) -> None:
    """Stop the state dir's bus (if its recorded PID is still the bus) and forget it."""
    bus = _read_bus(state_dir)
    if bus:
        _signal_and_wait(bus.pid, str(bus.conf))
    _bus_record(state_dir).unlink(missing_ok=True)


def use_bus(inst: Instance, bus: Bus) -> None:
    inst.bus_host, inst.bus_port, inst.bus_password_file = bus.host, bus.port, str(bus.password_file)


def start_all(instances: List[Instance], registry: Optional[Registry] = None,
              bus: Optional[Bus] = None) -> None:
    """Start every instance or none: a failure stops the ones already started (and the
    registry's bus, when no instance is left to use it)."""
    started: List[Instance] = []
    known = registry.load() if registry else {}
    clash = [i.id for i in instances if i.id in known]
    if clash:
        raise SdnmigError(f"instance(s) {', '.join(clash)} already exist in "
                          f"{registry.state_dir}: stop them first or choose other ids")
    if bus:
        for inst in instances:
            use_bus(inst, bus)
    try:
        for inst in instances:
            start_instance(inst)
            started.append(inst)
            if registry:
                known[inst.id] = inst
                registry.save(known)
    except BaseException:
        for inst in reversed(started):
            stop_instance(inst)
            known.pop(inst.id, None)
        if registry:
            registry.save(known)
            if not known:
                stop_bus(registry.state_dir)
        raise


def stop_all(registry: Registry, ids: Optional[Sequence[str]] = None) -> List[str]:
    """Stop the given instances (all by default), then the bus if none is left."""
    known = registry.load()
    wanted = list(known) if not ids else list(ids)
    unknown = [i for i in wanted if i not in known]
    if unknown:
        raise SdnmigError(f"no instance {', '.join(unknown)} in {registry.state_dir} "
                          f"(have: {', '.join(known) or 'none'})")
    for i in wanted:
        stop_instance(known.pop(i))
        registry.save(known)
    if not known:
        stop_bus(registry.state_dir)
    return wanted


def instance_state(inst: Instance) -> str:
    ctl = alive(inst.controller_pid, str(inst.path / "controller.conf"))
    red = alive(inst.redis_pid, str(inst.path / "redis.conf"))
    return {(True, True): "running", (False, False): "stopped"}.get(
        (ctl, red), "controller down" if red else "redis down")
