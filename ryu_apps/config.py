"""Per-instance settings, read from the `[sdnmig]` section of the platform's `--config-file`.

`sdnmig controllers start` writes that file; an operator running `osken-manager` by hand can write
it too. A bad value stops the instance with one line naming the option, before any switch connects.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, FrozenSet, Optional, Tuple

from oslo_config.cfg import DuplicateOptError

from sdnmig import compat

GROUP = "sdnmig"

_OPTS = [
    compat.cfg.StrOpt("instance_id", default="c0", help="name of this controller instance"),
    compat.cfg.StrOpt("redis_host", default="127.0.0.1"),
    compat.cfg.IntOpt("redis_port", default=6379),
    compat.cfg.StrOpt("redis_password_file", default="",
                      help="file holding the Redis password (empty: no password)"),
    compat.cfg.StrOpt("master_of", default="*",
                      help="switches this instance is MASTER of: '*', '' (none) or dpids "
                           "separated by commas (decimal or 0x-hex)"),
    compat.cfg.FloatOpt("role_timeout", default=3.0, help="seconds before a role request is retried"),
    compat.cfg.IntOpt("flow_idle_timeout", default=60, help="idle timeout of learnt flows (s)"),
    compat.cfg.BoolOpt("install_flows", default=True,
                       help="install a flow per learnt pair (false: every packet is a packet-in)"),
    compat.cfg.IntOpt("commit_batch", default=256,
                      help="most packet-ins answered per Redis round trip"),
    compat.cfg.StrOpt("bus_host", default="127.0.0.1",
                      help="the deployment's shared bus Redis (inter-controller messages)"),
    compat.cfg.IntOpt("bus_port", default=0, help="0: no bus (this instance cannot migrate)"),
    compat.cfg.StrOpt("bus_password_file", default="", help="file holding the bus password"),
    compat.cfg.StrOpt("peers", default="",
                      help="static candidate list 'c2,c3' used when discovery sees nobody"),
    compat.cfg.FloatOpt("migration_timeout", default=5.0,
                        help="seconds a candidate waits for the initiator before rolling back"),
    compat.cfg.StrOpt("events", default="platform",
                      help="where the suite's apps take OpenFlow events from: 'platform' or "
                           "'lime' (the LIME shim: one logical switch per migrated switch)"),
    compat.cfg.StrOpt("lime_spares", default="",
                      help="dpids the LIME shim keeps as clone targets, not switches of their own"),
    compat.cfg.StrOpt("lime_reserved", default="",
                      help="'dpid:port,...': ports kept for migrations (links to spares): the "
                           "LIME shim does not show them to apps"),
    compat.cfg.StrOpt("lime_hidden", default="",
                      help="dpids the LIME shim connects to but never shows to apps nor maps "
                           "(a tunnel switch another app patches, as in whole-network migration)"),
    compat.cfg.StrOpt("pathflip_switches", default="0x11,0x12,0x13,0x14",
                      help="pathflip: 'A,U,L,B': the first host's switch, the upper and the lower "
                           "middle switch, the second host's switch"),
    compat.cfg.StrOpt("pathflip_ports", default="1,2,4",
                      help="pathflip: 'up,down,host': the edge switches' ports to the upper and "
                           "the lower switch and to their host (the middle ones join 1 and 2)"),
    compat.cfg.FloatOpt("pathflip_period_s", default=1.0,
                        help="pathflip: seconds between two flips of the path"),
    compat.cfg.FloatOpt("lime_settle_ms", default=20.0,
                        help="LIME: how long a two-phase update waits after its first half's "
                             "barrier before the second half (Open vSwitch answers a barrier "
                             "before its datapath stops running the old rule: "
                             "experiments/barrier_lag.py)"),
    compat.cfg.StrOpt("fault", default="",
                      help="testing only: 'drop:TYPE[:N]' loses this instance's Nth outgoing "
                           "TYPE message; 'stall:TYPE:SECONDS' delays it"),
]


class ConfigError(Exception):
    """A setting is wrong; the message names it and says what is expected."""


@dataclass(frozen=True)
class InstanceConfig:
    instance_id: str
    redis_host: str
    redis_port: int
    redis_password: Optional[str]
    master_of: Optional[FrozenSet[int]]  # None means every switch
    role_timeout: float
    flow_idle_timeout: int
    commit_batch: int
    install_flows: bool = True
    bus_host: str = "127.0.0.1"
    bus_port: int = 0
    bus_password: Optional[str] = None
    peers: Tuple[str, ...] = ()
    migration_timeout: float = 5.0
    fault: str = ""

    def wants_master(self, dpid: int) -> bool:
        return self.master_of is None or dpid in self.master_of


def parse_dpids(text: str) -> Optional[FrozenSet[int]]:
    text = text.strip()
    if text == "*":
        return None
    dpids = set()
    for item in filter(None, (p.strip() for p in text.split(","))):
        try:
            dpid = int(item, 0)
        except ValueError:
            raise ConfigError(f"[sdnmig] master_of: {item!r} is not a datapath id "
                              "(decimal, or hex as 0x1f)") from None
        if not 0 <= dpid < 1 << 64:
            raise ConfigError(f"[sdnmig] master_of: {item!r} is out of range")
        dpids.add(dpid)
    return frozenset(dpids)


def _secret(path: str, option: str) -> Optional[str]:
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as e:
        raise ConfigError(f"[sdnmig] {option}: {e.strerror}: {path}") from None


def _register() -> None:
    try:
        compat.cfg.CONF.register_opts(_OPTS, group=GROUP)
    except DuplicateOptError:
        pass


def events_source() -> str:
    """'platform' or 'lime'; read when an app module is imported (its handlers name the events).
    The platform's manager has parsed the config file by then; anywhere else it is 'platform'."""
    _register()
    try:
        value = getattr(compat.cfg.CONF, GROUP).events
    except Exception:  # noqa: BLE001 -- no config parsed (a unit test importing an app)
        return "platform"
    if value not in ("platform", "lime"):
        raise ConfigError(f"[sdnmig] events must be 'platform' or 'lime', not {value!r}")
    return value


def lime_spares() -> FrozenSet[int]:
    _register()
    return parse_dpids(getattr(compat.cfg.CONF, GROUP).lime_spares) or frozenset()


def lime_hidden() -> FrozenSet[int]:
    _register()
    return parse_dpids(getattr(compat.cfg.CONF, GROUP).lime_hidden) or frozenset()


@dataclass(frozen=True)
class PathflipConfig:
    switches: Tuple[int, int, int, int]  # A, U, L, B
    up: int
    down: int
    host: int
    period_s: float


def pathflip() -> PathflipConfig:
    _register()
    group = getattr(compat.cfg.CONF, GROUP)
    try:
        switches = tuple(int(x, 0) for x in group.pathflip_switches.split(","))
        ports = tuple(int(x, 0) for x in group.pathflip_ports.split(","))
    except ValueError:
        raise ConfigError("[sdnmig] pathflip_switches and pathflip_ports must be numbers "
                          "separated by commas") from None
    if len(switches) != 4 or len(set(switches)) != 4:
        raise ConfigError(f"[sdnmig] pathflip_switches must name four different switches "
                          f"A,U,L,B, not {group.pathflip_switches!r}")
    if len(ports) != 3 or len(set(ports)) != 3 or not all(0 < p < 0xffffff00 for p in ports):
        raise ConfigError(f"[sdnmig] pathflip_ports must be three different ports up,down,host, "
                          f"not {group.pathflip_ports!r}")
    if not 0.05 <= group.pathflip_period_s <= 3600:
        raise ConfigError(f"[sdnmig] pathflip_period_s must be between 0.05 and 3600, "
                          f"not {group.pathflip_period_s}")
    return PathflipConfig(switches, *ports, group.pathflip_period_s)  # type: ignore[arg-type]


def lime_settle_s() -> float:
    _register()
    ms = getattr(compat.cfg.CONF, GROUP).lime_settle_ms
    if not 0 <= ms <= 10_000:
        raise ConfigError(f"[sdnmig] lime_settle_ms must be between 0 and 10000, not {ms}")
    return ms / 1000.0


def lime_reserved() -> Dict[int, FrozenSet[int]]:
    _register()
    out: Dict[int, set] = {}
    for item in filter(None, (p.strip() for p in getattr(compat.cfg.CONF, GROUP).lime_reserved
                              .split(","))):
        try:
            dpid, port = (int(x, 0) for x in item.split(":"))
        except ValueError:
            raise ConfigError(f"[sdnmig] lime_reserved: {item!r} is not dpid:port") from None
        out.setdefault(dpid, set()).add(port)
    return {d: frozenset(p) for d, p in out.items()}


def load() -> InstanceConfig:
    conf = compat.cfg.CONF
    _register()
    try:
        group = getattr(conf, GROUP)
        password = _secret(group.redis_password_file, "redis_password_file")
        bus_password = _secret(group.bus_password_file, "bus_password_file")
        cfg = InstanceConfig(
            instance_id=group.instance_id, redis_host=group.redis_host,
            redis_port=group.redis_port, redis_password=password,
            master_of=parse_dpids(group.master_of), role_timeout=group.role_timeout,
            flow_idle_timeout=group.flow_idle_timeout, commit_batch=group.commit_batch,
            install_flows=group.install_flows, bus_host=group.bus_host, bus_port=group.bus_port,
            bus_password=bus_password,
            peers=tuple(p.strip() for p in group.peers.split(",") if p.strip()),
            migration_timeout=group.migration_timeout, fault=group.fault)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 -- oslo.config's errors are not re-exported by the platform
        raise ConfigError(f"[sdnmig] {e}") from None
    if not 0 < cfg.redis_port < 65536:
        raise ConfigError(f"[sdnmig] redis_port {cfg.redis_port} is not a TCP port")
    if not 0 <= cfg.bus_port < 65536:
        raise ConfigError(f"[sdnmig] bus_port {cfg.bus_port} is not a TCP port")
    if cfg.migration_timeout <= 0:
        raise ConfigError("[sdnmig] migration_timeout must be positive")
    if cfg.role_timeout <= 0 or cfg.commit_batch < 1 or cfg.flow_idle_timeout < 0:
        raise ConfigError("[sdnmig] role_timeout and commit_batch must be positive, "
                          "flow_idle_timeout not negative")
    return cfg
