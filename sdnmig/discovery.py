"""Zeroconf discovery of controller instances: each instance's advertiser, and a browser.

A process of its own: the controller platform patches threads and sockets with eventlet, and
zeroconf runs an asyncio loop in a thread of its own; the two do not mix. So `sdnmig.instances`
starts `python -m sdnmig.discovery advertise --instance-json <dir>/instance.json` next to each
controller (in the controller's network namespace). The advertiser
- registers `<id>._sdnmig-ctl._tcp.local.` at the instance's address and OpenFlow port while the
  controller process is alive, with TXT id, of_port, endpoint (the instance's channel on the bus),
  load (the controller's CPU use over the last second, 1.0 = one core busy) and scope;
- re-publishes the TXT when the load moved by LOAD_STEP, or every REFRESH_S;
- browses the same type and mirrors the peers of its scope into `ctl:peers` of the instance's own
  Redis (field = peer id; `ts` = when that peer's advert last changed), and its own load into
  `ctl:load`; a peer leaves the hash on its goodbye, or RECORD_TTL_S after it went silent;
- withdraws the service and exits on SIGTERM, or when the instance's Redis is gone.

Scope: deployments sharing a link (two test runs on loopback) must not take each other for peers,
so the TXT carries the deployment's scope (its bus address, or its state dir when it has none) and
other scopes are ignored. Two deployments using one id on one link: zeroconf renames the later
service (`c1-2.<type>`); the id is always read from the TXT, never from the service name.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import queue
import signal
import socket
import sys
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ryu_apps.erc.wire import PEERS_KEY, channel
from sdnmig import instances
from sdnmig.instances import Instance

SERVICE_TYPE = "_sdnmig-ctl._tcp.local."
LOAD_KEY = "ctl:load"
LOAD_STEP = 0.05
REFRESH_S = 5.0
RECORD_TTL_S = 20  # a few refreshes: an advertiser killed without a goodbye vanishes this fast
TICK_S = 1.0
RESOLVE_MS = 2000

log = logging.getLogger("sdnmig.discovery")


# -- pure parts -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Advert:
    """What one instance says about itself in its TXT record (plus the address it is at)."""

    id: str
    host: str
    of_port: int
    endpoint: str
    load: float
    scope: str = ""


def endpoint(bus_host: str, bus_port: int, instance_id: str) -> str:
    """Where the instance listens on the bus; empty when it has no bus."""
    return f"redis://{bus_host}:{bus_port}/{channel(instance_id)}" if bus_port else ""


def default_scope(inst: Instance) -> str:
    return f"redis://{inst.bus_host}:{inst.bus_port}" if inst.bus_port else f"dir:{inst.path.parent}"


def default_interfaces(host: str) -> List[str]:
    """Loopback instances talk over 127.0.0.1 (zeroconf's own choice leaves `lo` out)."""
    return ["127.0.0.1"] if host.startswith("127.") else [host]


def encode_txt(ad: Advert) -> Dict[str, str]:
    return {"id": ad.id, "of_port": str(ad.of_port), "endpoint": ad.endpoint,
            "load": f"{ad.load:.3f}", "scope": ad.scope}


def _text(value: Union[bytes, str, None]) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else (value or "")


def parse_txt(data: bytes) -> Dict[str, str]:
    """The key=value strings of a TXT record's data (RFC 6763 6: length-prefixed strings)."""
    props, i = {}, 0
    while i < len(data):
        item, i = data[i + 1:i + 1 + data[i]], i + 1 + data[i]
        key, _, value = item.partition(b"=")
        if key and _text(key) not in props:  # the first occurrence wins (RFC 6763 6.4)
            props[_text(key)] = _text(value)
    return props


def decode_txt(props: Mapping[Union[bytes, str], Union[bytes, str, None]], host: str) -> Advert:
    """The advert in a TXT record; ValueError (saying what is wrong) for a foreign or bad one."""
    txt = {_text(k): _text(v) for k, v in props.items()}
    if not txt.get("id"):
        raise ValueError("no id in TXT")
    try:
        of_port, load = int(txt.get("of_port", "")), float(txt.get("load", "0"))
    except ValueError:
        raise ValueError(f"bad of_port or load in TXT of {txt['id']!r}") from None
    if not 0 < of_port < 65536 or not (math.isfinite(load) and load >= 0):
        raise ValueError(f"of_port or load out of range in TXT of {txt['id']!r}")
    return Advert(txt["id"], host, of_port, txt.get("endpoint", ""), load, txt.get("scope", ""))


def peer_record(ad: Advert, ts: float) -> str:
    """The `ctl:peers` value (see ryu_apps.erc.wire)."""
    return json.dumps({"id": ad.id, "host": ad.host, "of_port": ad.of_port,
                       "endpoint": ad.endpoint, "load": ad.load, "ts": round(ts, 3)})


def stat_ticks(stat: str) -> int:
    """CPU time (utime + stime, in clock ticks) from the text of /proc/<pid>/stat."""
    fields = stat.rsplit(")", 1)[1].split()  # the command name in parentheses may hold spaces
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5); [0] is field 3


def cpu_load(prev: Tuple[int, float], cur: Tuple[int, float], hz: int) -> float:
    """CPU use between two (ticks, monotonic seconds) samples: 1.0 = one core busy all along."""
    seconds = cur[1] - prev[1]
    if seconds <= 0:
        return 0.0
    return round(max(cur[0] - prev[0], 0) / hz / seconds, 3)


def due(advertised: float, load: float, since_s: float) -> bool:
    """Publish again? The load moved by LOAD_STEP, or REFRESH_S passed since the last time."""
    return round(abs(load - advertised), 3) >= LOAD_STEP or since_s >= REFRESH_S


class PeerView:
    """Which service names stand for which peer ids, as announcements and goodbyes arrive."""

    def __init__(self, own_id: str, scope: str) -> None:
        self.own_id, self.scope = own_id, scope
        self.names: Dict[str, str] = {}

    def seen(self, name: str, ad: Advert) -> bool:
        """Record a resolved service; True if it is a peer (same scope, not this instance)."""
        if ad.scope != self.scope or ad.id == self.own_id:
            return False
        self.names[name] = ad.id
        return True

    def gone(self, name: str) -> Optional[str]:
        """A service was withdrawn: the peer id to forget, unless another name still carries it."""
        peer = self.names.pop(name, None)
        return peer if peer is not None and peer not in self.names.values() else None


# -- the advertiser -------------------------------------------------------------------------------

def _read_instance(path: Path) -> Instance:
    return Instance(**json.loads(path.read_text()))


def _instance_path(path: Path) -> Path:
    return path / "instance.json" if path.is_dir() else path


def _sample(pid: int) -> Optional[Tuple[int, float]]:
    try:
        return stat_ticks(Path(f"/proc/{pid}/stat").read_text()), time.monotonic()
    except (OSError, IndexError, ValueError):
        return None


class Advertiser:
    """One instance's advert and its view of the peers (see the module docstring)."""

    def __init__(self, instance_file: Path, interfaces: Sequence[str],
                 scope: Optional[str]) -> None:
        import redis
        from zeroconf import Zeroconf

        self.file = instance_file
        self.inst = _read_instance(instance_file)
        self.mtime = instance_file.stat().st_mtime_ns
        self.scope = scope if scope is not None else default_scope(self.inst)
        self.view = PeerView(self.inst.id, self.scope)
        self.events: "queue.Queue[Optional[Tuple[Any, str]]]" = queue.Queue()
        self.stopping = threading.Event()
        self.redis = redis.Redis(host=self.inst.host, port=self.inst.redis_port,
                                 password=self.inst.redis_password, socket_timeout=5)
        self.zc = Zeroconf(interfaces=list(interfaces))
        self.info: Any = None  # the registered ServiceInfo, None while not advertised
        self.load, self.advertised, self.published = 0.0, 0.0, 0.0
        self.prev: Optional[Tuple[int, float]] = None
        self.hz = os.sysconf("SC_CLK_TCK")
        self.unreachable = False
        log.info("advertiser for %s: interfaces %s, scope %s", self.inst.id,
                 ",".join(interfaces), self.scope)

    def stop(self) -> None:
        self.stopping.set()
        self.events.put(None)

    def run(self) -> None:
        from zeroconf import ServiceBrowser

        self.redis.delete(PEERS_KEY)
        browser = ServiceBrowser(self.zc, SERVICE_TYPE, handlers=[self._on_change])
        try:
            next_tick = time.monotonic()
            while not self.stopping.is_set():
                if time.monotonic() >= next_tick:
                    if not self._instance_alive():
                        log.info("%s: its Redis is gone; exiting", self.inst.id)
                        return
                    self._guarded(self._tick)
                    next_tick = time.monotonic() + TICK_S
                try:
                    event = self.events.get(timeout=max(next_tick - time.monotonic(), 0))
                except queue.Empty:
                    continue
                if event is not None:
                    self._guarded(self._handle, *event)
        finally:
            browser.cancel()
            self._close()

    def _guarded(self, step: Any, *args: Any) -> None:
        """Run a step; the instance's Redis out of reach (its namespace's network torn down
        before the instance was stopped) is said once, then retried every tick."""
        import redis

        try:
            step(*args)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            if not self.unreachable:
                log.warning("%s: own Redis unreachable (%s); retrying", self.inst.id, e)
            self.unreachable = True
        else:
            if self.unreachable:
                log.info("%s: own Redis reachable again", self.inst.id)
            self.unreachable = False

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        self.events.put((state_change, name))  # resolved in the main loop: never block zeroconf

    def _instance_alive(self) -> bool:
        return instances.alive(self.inst.redis_pid, str(self.inst.path / "redis.conf"))

    def _controller_alive(self) -> bool:
        return instances.alive(self.inst.controller_pid, str(self.inst.path / "controller.conf"))

    def _tick(self) -> None:
        mtime = self.file.stat().st_mtime_ns
        if mtime != self.mtime:  # the controller was restarted: follow its new PID
            self.inst, self.mtime, self.prev = _read_instance(self.file), mtime, None
        up = self._controller_alive()
        cur = _sample(self.inst.controller_pid) if up else None
        self.load = cpu_load(self.prev, cur, self.hz) if self.prev and cur else 0.0
        self.prev = cur
        self.redis.set(LOAD_KEY, f"{self.load:.3f}")
        self._prune()
        now = time.monotonic()
        if up and self.info is None:
            self.info = self._service_info(self._service_name())
            self.zc.register_service(self.info, allow_name_change=True)
            self.advertised, self.published = self.load, now
            log.info("%s: advertised as %s", self.inst.id, self.info.name)
        elif not up and self.info is not None:
            self.zc.unregister_service(self.info)
            self.info = None
            log.info("%s: controller down: advert withdrawn", self.inst.id)
        elif self.info is not None and due(self.advertised, self.load, now - self.published):
            self.info = self._service_info(self.info.name)
            self.zc.update_service(self.info)
            log.debug("%s: advert refreshed, load %.3f", self.inst.id, self.load)
            self.advertised, self.published = self.load, now

    def _service_name(self) -> str:
        return f"{self.inst.id}.{SERVICE_TYPE}"

    def _service_info(self, name: str) -> Any:
        from zeroconf import ServiceInfo

        ad = Advert(self.inst.id, self.inst.host, self.inst.of_port,
                    endpoint(self.inst.bus_host, self.inst.bus_port, self.inst.id), self.load,
                    self.scope)
        server = f"sdnmig-{self.inst.id}-{zlib.crc32(self.scope.encode()):08x}.local."
        return ServiceInfo(SERVICE_TYPE, name, port=ad.of_port, properties=encode_txt(ad),
                           server=server, addresses=[socket.inet_aton(ad.host)],
                           host_ttl=RECORD_TTL_S, other_ttl=RECORD_TTL_S)

    def _handle(self, change: Any, name: str) -> None:
        from zeroconf import ServiceStateChange

        if change is ServiceStateChange.Removed:
            self._forget(name)
            return
        ad = resolve(self.zc, name, RESOLVE_MS)
        if ad is not None and self.view.seen(name, ad):
            self.redis.hset(PEERS_KEY, ad.id, peer_record(ad, time.time()))

    def _forget(self, name: str) -> None:
        peer = self.view.gone(name)
        if peer is not None:
            self.redis.hdel(PEERS_KEY, peer)
            log.info("%s: peer %s gone", self.inst.id, peer)

    def _prune(self) -> None:
        """Forget peers whose records expired. Zeroconf keeps a PTR record at least 1125 s and
        reports a service removed only when that expires: a peer whose advertiser died without a
        goodbye would linger that long. Its SRV and TXT expire after RECORD_TTL_S."""
        for name in list(self.view.names):
            if _freshest(self.zc, name, _SRV) is None:
                self._forget(name)

    def _close(self) -> None:
        if self.info is not None:
            self.zc.unregister_service(self.info)
        self.zc.close()
        import redis

        try:
            self.redis.delete(PEERS_KEY, LOAD_KEY)
        except redis.RedisError:
            pass  # the instance's Redis was stopped first: nothing left to clean


_A, _TXT, _SRV, _IN = 1, 16, 33, 1  # DNS record types and class (RFC 1035, RFC 2782)


def _freshest(zc: Any, name: str, rtype: int) -> Any:
    """The cached, unexpired record of this name and type that lives longest, or None.

    Not zeroconf's own lookup: that takes the record stored first-or-last by its data, which after
    a TXT change back to an earlier value is the superseded TXT, expiring a second later.
    """
    from zeroconf import current_time_millis

    now = current_time_millis()
    live = [r for r in zc.cache.get_all_by_details(name, rtype, _IN) if not r.is_expired(now)]
    return max(live, key=lambda r: r.get_expiration_time(100), default=None)


def cached_advert(zc: Any, name: str) -> Optional[Advert]:
    """The advert behind a service name as zeroconf's cache has it now, or None if incomplete."""
    srv, txt = _freshest(zc, name, _SRV), _freshest(zc, name, _TXT)
    address = _freshest(zc, srv.server, _A) if srv is not None else None
    if txt is None or address is None:
        return None
    return decode_txt(parse_txt(txt.text), socket.inet_ntoa(address.address))


def resolve(zc: Any, name: str, timeout_ms: int) -> Optional[Advert]:
    """The advert behind a service name (asking the network if the cache lacks it), or None
    (not answering, or not one of ours)."""
    try:
        ad = cached_advert(zc, name)
        if ad is None and zc.get_service_info(SERVICE_TYPE, name, timeout=timeout_ms):
            ad = cached_advert(zc, name)
        return ad
    except ValueError as e:
        log.warning("ignoring %s: %s", name, e)
        return None


# -- the browser (command-line client) ------------------------------------------------------------

def browse(timeout: float, interfaces: Sequence[str] = ("127.0.0.1",)) -> List[Dict[str, Any]]:
    """Listen for `timeout` seconds; return the instances advertised then, sorted by id."""
    from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

    zc = Zeroconf(interfaces=list(interfaces))
    names: Dict[str, bool] = {}

    def on_change(zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        names[name] = state_change is not ServiceStateChange.Removed

    browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
    try:
        threading.Event().wait(timeout)  # the listening window the user asked for
        found = []
        for name in [n for n, present in names.items() if present]:
            ad = resolve(zc, name, 1000)
            if ad is not None:
                found.append(dict(vars(ad), name=name))
        return sorted(found, key=lambda d: (d["scope"], d["id"]))
    finally:
        browser.cancel()
        zc.close()


def cmd_discover(args: argparse.Namespace) -> int:
    from sdnmig.cli import _table  # the client's table format (imported late: cli imports us)

    found = browse(args.timeout, args.interface or ["127.0.0.1"])
    if not found:
        print(f"no controller instance answered within {args.timeout:g} s")
        return 0
    print(_table([["instance", "openflow", "load", "endpoint", "scope"]] +
                 [[d["id"], f"tcp:{d['host']}:{d['of_port']}", f"{d['load']:.3f}",
                   d["endpoint"] or "-", d["scope"] or "-"] for d in found]))
    return 0


def add_command(subparsers: Any) -> None:
    """Register `sdnmig discover [--timeout S] [--interface IP]`."""
    p = subparsers.add_parser("discover", help="list the controller instances zeroconf sees")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds to listen (default 3)")
    p.add_argument("--interface", action="append", metavar="IP",
                   help="address to browse on (repeatable; default 127.0.0.1)")
    p.set_defaults(func=cmd_discover)


# -- entry point of the advertiser process ---------------------------------------------------------

class _NetworkErrorsOnOneLine(logging.Filter):
    """Zeroconf logs a failed send with its traceback, e.g. when a namespace's interface goes away
    before the instance is stopped. Keep the warning, drop the traceback: the network's fault, not
    a bug (a traceback in a log fails the test that ran it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], OSError):
            record.exc_info, record.exc_text = None, None
        return True



def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sdnmig.discovery")
    sub = p.add_subparsers(dest="cmd", required=True)
    adv = sub.add_parser("advertise", help="advertise one instance and mirror its peers")
    adv.add_argument("--instance-json", type=Path, required=True,
                     help="the instance's instance.json, or its directory")
    adv.add_argument("--interface", action="append", metavar="IP",
                     help="address to advertise on (repeatable; default: 127.0.0.1 for "
                          "loopback instances, else the instance's host)")
    adv.add_argument("--scope", help="deployment scope (default: the instance's bus address)")
    add_command(sub)
    args = p.parse_args(argv)
    logging.basicConfig(level=os.environ.get("SDNMIG_DISCOVERY_LOG", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("zeroconf").addFilter(_NetworkErrorsOnOneLine())
    if args.cmd == "discover":
        return args.func(args)
    path = _instance_path(args.instance_json)
    inst = _read_instance(path)
    adv_ = Advertiser(path, args.interface or default_interfaces(inst.host), args.scope)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: adv_.stop())
    adv_.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
