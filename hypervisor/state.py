"""What the hypervisor management knows, as one JSON file in its state directory. No processes.

The file (`<state>/state.json`, written to a temporary file and renamed over, so a crash leaves
the old or the new state, never half of one) is the management's only memory: it survives the
management's own restart. Everything else in the directory is derived from it by name:

    state.json   {"version": 1,
                  "proxy": {"listen": "127.0.0.1:16700", "pid": 123} | null,
                  "slices": [...as hypervisor.slicing takes them...],
                  "controllers": {"t1": "127.0.0.1:6653"}, "deadline_s": 5.0,
                  "switches": {"br1": {"dpid": "0x1", "passive": "127.0.0.1:6634",
                                       "served_by": "hv1" | null,
                                       "tenants": {"t1": "hv1"}}},
                  "instances": {"hv1": {"listen_port": 16653, "pid": 456}}}
    NAME.json    the instance's configuration (hypervisor.instance.Config)
    NAME.sock    its control socket, NAME.log its log
    proxy.sock   the proxy's control socket, proxy.log its log
    api.token    the HTTP API's bearer token (0600)

`served_by` is the instance the bridge's controller configuration names; `tenants` is who serves
each tenant's slice there, which differs from it while only some tenants have moved.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from hypervisor.slicing import Slicer
from sdnmig.errors import SdnmigError

VERSION = 1
STATE_FILE = "state.json"
LOOPBACK = "127.0.0.1"
DEFAULT_DEADLINE_S = 5.0
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}\Z")
RESERVED_NAMES = frozenset({"state", "proxy", "api"})  # their files are the management's own
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


@dataclass
class ProxyRec:
    listen: str
    pid: Optional[int] = None


@dataclass
class InstanceRec:
    listen_port: int
    pid: Optional[int] = None


@dataclass
class SwitchRec:
    dpid: int
    passive: str
    served_by: Optional[str] = None
    tenants: Dict[str, str] = field(default_factory=dict)


@dataclass
class State:
    proxy: Optional[ProxyRec] = None
    slices: List[Dict[str, Any]] = field(default_factory=list)
    controllers: Dict[str, str] = field(default_factory=dict)
    deadline_s: float = DEFAULT_DEADLINE_S
    switches: Dict[str, SwitchRec] = field(default_factory=dict)
    instances: Dict[str, InstanceRec] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return {"version": VERSION,
                "proxy": None if self.proxy is None else vars(self.proxy).copy(),
                "slices": self.slices, "controllers": self.controllers,
                "deadline_s": self.deadline_s,
                "switches": {b: {"dpid": f"{s.dpid:#x}", "passive": s.passive,
                                 "served_by": s.served_by, "tenants": dict(s.tenants)}
                             for b, s in self.switches.items()},
                "instances": {n: vars(i).copy() for n, i in self.instances.items()}}

    @classmethod
    def from_json(cls, raw: Any) -> "State":
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        if raw.get("version", VERSION) != VERSION:
            raise ValueError(f"version {raw.get('version')!r}: this management writes {VERSION}")
        proxy = raw.get("proxy")
        return cls(
            proxy=None if proxy is None else ProxyRec(str(proxy["listen"]), proxy.get("pid")),
            slices=list(raw.get("slices", [])), controllers=dict(raw.get("controllers", {})),
            deadline_s=float(raw.get("deadline_s", DEFAULT_DEADLINE_S)),
            switches={str(b): SwitchRec(int(s["dpid"], 16), str(s["passive"]), s.get("served_by"),
                                        dict(s.get("tenants", {})))
                      for b, s in raw.get("switches", {}).items()},
            instances={str(n): InstanceRec(int(i["listen_port"]), i.get("pid"))
                       for n, i in raw.get("instances", {}).items()})


def load(state_dir: Path) -> State:
    """The state recorded in `state_dir` (an empty one when there is none yet)."""
    path = Path(state_dir) / STATE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return State()
    except OSError as exc:
        raise SdnmigError(f"{path}: {exc.strerror or exc}") from None
    try:
        return State.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SdnmigError(f"{path} is damaged ({exc}): fix or remove it") from None


def save(state_dir: Path, st: State) -> None:
    """Write atomically: a reader (or a crash) sees the old file or the new, never a mix."""
    path = Path(state_dir) / STATE_FILE
    tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(st.to_json(), f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# -- checks of what the operator gives ------------------------------------------------------------

def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise SdnmigError(f"instance name {name!r}: 1-32 letters, digits, '-' or '_', "
                          "starting with a letter or digit")
    if name in RESERVED_NAMES:
        raise SdnmigError(f"instance name {name!r} is reserved: choose another")
    return name


def check_port(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise SdnmigError(f"{what} {value!r}: a TCP port, 1-65535")
    return value


def parse_hostport(value: Any, what: str) -> Tuple[str, int]:
    host, sep, port = str(value).rpartition(":")
    if not isinstance(value, str) or not sep or not host or not port.isdigit() \
            or not 0 < int(port) < 65536:
        raise SdnmigError(f"{what} {value!r}: use HOST:PORT, e.g. 127.0.0.1:6653")
    return host, int(port)


def parse_controllers(items: Sequence[str]) -> Dict[str, str]:
    """`t1=127.0.0.1:6653` words into {tenant: address}."""
    out: Dict[str, str] = {}
    for item in items:
        tenant, sep, addr = str(item).partition("=")
        if not sep or not tenant:
            raise SdnmigError(f"controller {item!r}: use TENANT=HOST:PORT")
        if tenant in out:
            raise SdnmigError(f"controller for tenant {tenant!r} given twice")
        parse_hostport(addr, f"controller of {tenant}")
        out[tenant] = addr
    return out


def parse_dpid(value: Any) -> Optional[int]:
    """A datapath id written as 1, "1" or "0x1"; None if it is not one."""
    try:
        dpid = int(value, 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        return None
    return dpid if 0 < dpid < 2 ** 64 and not isinstance(value, bool) else None


def tenants_on(slices: Sequence[Mapping[str, Any]], dpid: int) -> List[str]:
    """The tenants whose slice has a port (access or trunk) on switch `dpid`: the instances'
    own reading of the slices (hypervisor.slicing), so the two never disagree."""
    return Slicer.from_config(slices).tenants_on(dpid)


def check_deployment(slices: Any, controllers: Mapping[str, str]) -> List[Dict[str, Any]]:
    """The slices as a list, each tenant with a controller and each controller with a tenant;
    the slices' own rules are hypervisor.slicing's (checked when it can be imported)."""
    if isinstance(slices, dict) and set(slices) == {"slices"}:
        slices = slices["slices"]
    if not isinstance(slices, list) or not all(isinstance(s, dict) for s in slices):
        raise SdnmigError("slices: a JSON list of slice objects ({\"tenant\", \"ports\"})")
    try:
        Slicer.from_config(slices)
    except ValueError as exc:
        raise SdnmigError(f"slices: {exc}") from None
    tenants = [s.get("tenant") for s in slices]
    if not all(isinstance(t, str) and t for t in tenants):
        raise SdnmigError("slices: every slice needs a \"tenant\" name")
    missing = sorted(set(tenants) - set(controllers))
    if missing:
        raise SdnmigError(f"no controller for tenant(s) {', '.join(missing)}: add "
                          f"--controllers {missing[0]}=HOST:PORT")
    extra = sorted(set(controllers) - set(tenants))
    if extra:
        raise SdnmigError(f"controller(s) for unknown tenant(s) {', '.join(extra)}: no slice "
                          "has that tenant")
    return slices


# -- what is derived from the state ---------------------------------------------------------------

def instance_config(st: State, name: str, listen_port: int) -> Dict[str, Any]:
    """The configuration `python -m hypervisor --config` reads (hypervisor.instance.Config)."""
    if st.proxy is None:
        raise SdnmigError("no proxy recorded: run proxy-start first")
    if not st.slices:
        raise SdnmigError("no slices: run configure first")
    host, port = parse_hostport(st.proxy.listen, "proxy address")
    return {"name": name, "listen": {"host": LOOPBACK, "port": listen_port},
            "proxy": {"host": host, "port": port}, "slices": st.slices,
            "controllers": dict(st.controllers), "deadline_s": st.deadline_s}


def set_controller_args(bridge: str, listen_port: int, passive: str) -> List[str]:
    """One ovs-vsctl command naming the instance as the bridge's controller and keeping the
    passive port: OVS flushes the flow tables when the last primary controller goes, or the
    first comes, so the set is replaced in one call, never emptied then refilled."""
    host, port = parse_hostport(passive, "passive address")
    return ["set-controller", bridge, f"tcp:{LOOPBACK}:{listen_port}", f"ptcp:{port}:{host}"]


def sock_path(path: Path) -> Path:
    if len(str(path).encode()) > UNIX_PATH_MAX:
        raise SdnmigError(f"{path}: too long for a Unix socket ({UNIX_PATH_MAX} bytes): "
                          "use a shorter --state directory")
    return path


def serving_table(st: State, proxy_status: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Who serves which switch and tenant: as the proxy sees it, else as the state records it."""
    names = {f"{s.dpid:#x}": b for b, s in st.switches.items()}
    rows, seen = [], set()
    for t in (proxy_status or {}).get("tenancies", []):
        dpid = str(t.get("switch"))
        seen.add((dpid, t.get("tenant")))
        rows.append({"switch": names.get(dpid, dpid), "dpid": dpid, "tenant": t.get("tenant"),
                     "served_by": t.get("served_by"), "taking_over": t.get("taking_over"),
                     "route": t.get("route"), "source": "proxy"})
    for bridge, sw in sorted(st.switches.items()):
        for tenant, name in sorted(sw.tenants.items()):
            if (f"{sw.dpid:#x}", tenant) not in seen:
                rows.append({"switch": bridge, "dpid": f"{sw.dpid:#x}", "tenant": tenant,
                             "served_by": name, "taking_over": None, "route": None,
                             "source": "state"})
    return rows
