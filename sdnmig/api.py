"""`sdnmig api`: the operations of `sdnmig.ops` over HTTP, for scripts and dashboards.

    POST /migrate  {"switch": 1, "to": ["c2","c3"] | "fixed": "c2" | "auto": 2,
                    "commit": "phase2", "transfer": "copy", "timeout": 10}  -> migration record
    POST /cancel   {"switch": "0x1"}                                       -> OP_RESULT body
    GET  /status                                                           -> ops.status()
    GET  /history?limit=N                                                  -> [records]
    GET  /lime/status                                  -> the LIME shim's status answer
    POST /lime/<op>  (op: clone, freeze, move_host, retire, ensemble, retire_ensemble; the
                      body is the operation's request without "op", as lime_shim.plan.check
                      takes it)                        -> the shim's answer
         /lime/...?controller=ID&timeout=S   which instance's shim (sdnmig.lime.choose), how long
    GET  /vnm/status                                   -> the VNM app's answer (its state)
    POST /vnm/prepare   {"algorithm": "alap"|"asap", "layout": {...}} as the app takes it, or
                        {"algorithm", "pairs": {"0x11": "0x21", ...}, "tunnel_switch": "0x30",
                         "hosts": {"h1": "0x11:4"} (optional)} planned here from the wiring
                        of the chosen instance's bridges (sdnmig.vnm)
    POST /vnm/migrate   {"host": "h1", "algorithm": optional}   -> the VNM app's answer
    POST /vnm/finalize  {"algorithm": optional}                  -> the VNM app's answer
         /vnm/...?controller=ID&timeout=S    which instance's VNM app (sdnmig.vnm.choose)

Every request needs `Authorization: Bearer <token>` (the token file is made 0600 on first use).
The server binds to loopback unless the operator names another address explicitly: it starts
migrations, so it must not appear on a network by accident. Answers are JSON; errors are
{"error": "..."} with 400 (bad input, or refused by the controller), 401, 404, 405, 411, 413
(body over 64 KiB), 503 (no bus, or the bus is down; no LIME shim or VNM app to ask; the wiring
could not be read), 504 (no answer from the controller in time). The bus (and a shim's Redis) is
looked up per request, so the server outlives controller restarts.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple
from urllib.parse import parse_qs, urlsplit

from lime_shim import client as lime_client
from lime_shim import plan as lime_plan
from ryu_apps.vnm.core import COMMANDS as VNM_COMMANDS
from sdnmig import instances, lime, ops, vnm
from sdnmig.errors import SdnmigError

LOG = logging.getLogger(__name__)
DEFAULT_PORT = 8765
LOOPBACK = "127.0.0.1"
TOKEN_FILE = "api.token"
MAX_BODY = 64 * 1024
DRAIN_LIMIT = 1024 * 1024  # read and drop an oversized body up to this, so the 413 gets through
MIGRATE_FIELDS = {"switch", "to", "fixed", "auto", "mode", "commit", "transfer", "timeout"}

BusFactory = Callable[[], Any]  # -> a redis.Redis client for the bus, or None when there is none


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def load_token(path: Path) -> str:
    """The bearer token in `path`, made (0600, random) if absent; refused if others may read it."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    if path.stat().st_mode & 0o077:
        raise SdnmigError(f"{path} is open to other users: chmod 600 it")
    token = path.read_text().strip()
    if not token:
        raise SdnmigError(f"{path} is empty: write a token into it, or remove it to get a new one")
    return token


def bus_from_state_dir(state_dir: Path) -> BusFactory:
    """A factory of the state dir's bus client (None: no bus), one client per bus."""
    lock = threading.Lock()
    cache: Dict[str, Any] = {}

    def factory() -> Any:
        bus = instances.load_bus(state_dir)
        if bus is None:
            return None
        key = (bus.host, bus.port, bus.password)
        with lock:
            if cache.get("key") != key:
                cache.update(key=key, client=bus.client())
            return cache["client"]
    return factory


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: Tuple[str, int], bus_factory: BusFactory, token: str,
                 shims: Optional[lime.ShimFactory] = None,
                 vnm: Optional[vnm.TargetFactory] = None) -> None:
        self.bus_factory = bus_factory
        self.shims = shims
        self.vnm = vnm
        self.token = token.encode()
        super().__init__(address, Handler)


class Server6(Server):
    address_family = socket.AF_INET6


def make_server(bus_factory: BusFactory, token: str, host: str = LOOPBACK,
                port: int = DEFAULT_PORT, *, allow_remote: bool = False,
                shims: Optional[lime.ShimFactory] = None,
                vnm: Optional[vnm.TargetFactory] = None) -> Server:
    """A bound server (call serve_forever); port 0 picks a free port (see server_address)."""
    if not allow_remote and not _is_loopback(host):
        raise SdnmigError(f"refusing to serve on {host}: not a loopback address (give --host "
                          "explicitly to serve there)")
    if not token:
        raise SdnmigError("an empty API token would let anyone in")
    cls = Server6 if ":" in host else Server
    try:
        return cls((host, port), bus_factory, token, shims, vnm)
    except OSError as e:
        raise SdnmigError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


# -- routes ---------------------------------------------------------------------------------------

def _only(body: Dict[str, Any], allowed: set) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise HttpError(400, f"unknown field(s) {', '.join(unknown)}: use "
                             f"{', '.join(sorted(allowed))}")


def _switch(body: Dict[str, Any]) -> Any:
    if "switch" not in body:
        raise HttpError(400, "field 'switch' (a datapath id) is required")
    return body["switch"]


# Each route checks what it can without the bus first, so bad input is a 400 even with no bus.

def _migrate(bus: BusFactory, query: Dict[str, Any], body: Dict[str, Any]) -> Any:
    _only(body, MIGRATE_FIELDS)
    args = dict(to=body.get("to"), fixed=body.get("fixed"), auto=body.get("auto"),
                commit=body.get("commit", "phase2"), transfer=body.get("transfer", "copy"),
                timeout=body.get("timeout", 10.0), mode=body.get("mode"))
    dpid = ops.parse_dpid(_switch(body))
    ops.migrate_body(**args)
    return ops.migrate(bus(), dpid, **args)


def _cancel(bus: BusFactory, query: Dict[str, Any], body: Dict[str, Any]) -> Any:
    _only(body, {"switch", "timeout"})
    dpid = ops.parse_dpid(_switch(body))
    return ops.cancel(bus(), dpid, body.get("timeout", 10.0))


def _status(bus: BusFactory, query: Dict[str, Any], body: Dict[str, Any]) -> Any:
    return ops.status(bus())


def _history(bus: BusFactory, query: Dict[str, Any], body: Dict[str, Any]) -> Any:
    raw = query.get("limit", [str(ops.DEFAULT_HISTORY)])[-1]
    try:
        limit = int(raw)
    except ValueError:
        raise HttpError(400, f"limit {raw!r} is not a whole number") from None
    limit = ops.check_limit(limit)
    return ops.history(bus(), limit)


Route = Callable[[BusFactory, Dict[str, Any], Dict[str, Any]], Any]
ROUTES: Dict[str, Tuple[str, Route]] = {
    "/migrate": ("POST", _migrate), "/cancel": ("POST", _cancel),
    "/status": ("GET", _status), "/history": ("GET", _history),
}


LIME_PREFIX = "/lime/"
LIME_GET = {"status"}


def _lime_op(path: str) -> Optional[str]:
    """The LIME operation a path names (move-host and move_host alike), or None."""
    if not path.startswith(LIME_PREFIX):
        return None
    op = path[len(LIME_PREFIX):].replace("-", "_")
    return op if op in lime_plan.OPS else None


VNM_PREFIX = "/vnm/"
VNM_METHODS = {c: "GET" if c == "status" else "POST" for c in VNM_COMMANDS}


def _query_one(query: Dict[str, List[str]], name: str) -> Optional[str]:
    values = query.get(name)
    return values[-1] if values else None


def _lime_timeout(query: Dict[str, List[str]]) -> float:
    raw = _query_one(query, "timeout")
    if raw is None:
        return lime.DEFAULT_TIMEOUT_S
    try:
        return ops._check_timeout(float(raw))
    except ValueError:
        raise HttpError(400, f"timeout {raw!r} is not a number of seconds") from None


def _method(path: str, method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpError(405, f"{path} takes {allowed}, not {method}")


def _chosen(factory: Optional[Callable[[Optional[str], Optional[int]], Any]],
            query: Dict[str, List[str]], switch: Optional[int], what: str) -> Any:
    """What `factory` gives for the query's controller and the request's switch (a shim's
    Redis, a VNM migrator); Unavailable (503) when there is none to ask."""
    if factory is None:
        raise lime_client.Unavailable(f"this server has no {what}s to ask")
    try:
        return factory(_query_one(query, "controller"), switch)
    except (SdnmigError, OSError) as e:
        raise lime_client.Unavailable(f"no {what} to ask: {e}") from None


class Handler(BaseHTTPRequestHandler):
    """Token, then path, then method, then body; each failure is a JSON error."""

    server: Server
    server_version = "sdnmig-api"
    sys_version = ""
    timeout = 30  # a client that stops sending does not hold a thread for ever

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def _handle(self, method: str) -> None:
        try:
            status, payload = 200, self._dispatch(method)
        except HttpError as e:
            status, payload = e.status, {"error": str(e)}
        except (ops.BusError, lime_client.Unavailable) as e:
            status, payload = 503, {"error": str(e)}
        except (ops.NoAnswer, lime_client.NoAnswer) as e:
            status, payload = 504, {"error": str(e)}
        except SdnmigError as e:
            status, payload = 400, {"error": str(e)}
        except Exception as e:  # a bug: say so loudly, answer 500 instead of dropping the client
            LOG.exception("sdnmig api: %s %s failed", method, self.path)
            status, payload = 500, {"error": f"internal error: {type(e).__name__}: {e}"}
        self._send(status, payload)

    def _dispatch(self, method: str) -> Any:
        if not self._authorized():
            raise HttpError(401, "missing or wrong token: send 'Authorization: Bearer <token>'")
        url = urlsplit(self.path)
        if url.path.startswith(LIME_PREFIX):
            return self._lime(method, url.path, parse_qs(url.query))
        if url.path.startswith(VNM_PREFIX):
            return self._vnm(method, url.path, parse_qs(url.query))
        if url.path not in ROUTES:
            raise HttpError(404, f"no such path {url.path}: use {', '.join(sorted(ROUTES))}, "
                                 f"{LIME_PREFIX}<op> or {VNM_PREFIX}<command>")
        allowed, route = ROUTES[url.path]
        _method(url.path, method, allowed)
        body = self._body() if method == "POST" else {}
        return route(self._bus, parse_qs(url.query), body)

    def _lime(self, method: str, path: str, query: Dict[str, List[str]]) -> Any:
        """A LIME operation, checked here (400), then sent to the chosen instance's shim."""
        op = _lime_op(path)
        if op is None:
            raise HttpError(404, f"no such path {path}: use {LIME_PREFIX}<op>, op one of "
                                 f"{', '.join(sorted(lime_plan.OPS))}")
        _method(path, method, "GET" if op in LIME_GET else "POST")
        req = lime_plan.check(op, self._body() if method == "POST" else {})
        timeout = _lime_timeout(query)
        shim = _chosen(self.server.shims, query, lime.switch_of(req), "LIME shim")
        return lime.run(shim, req, timeout)

    def _vnm(self, method: str, path: str, query: Dict[str, List[str]]) -> Any:
        """A VNM command, checked here (400), prepare planned from the wiring if asked, then
        sent to the chosen instance's VNM app."""
        command = path[len(VNM_PREFIX):]
        if command not in VNM_METHODS:
            raise HttpError(404, f"no such path {path}: use {VNM_PREFIX}<command>, command one "
                                 f"of {', '.join(VNM_METHODS)}")
        _method(path, method, VNM_METHODS[command])
        body = self._body() if method == "POST" else {}
        req = vnm.prepare_from_body(body) if command == "prepare" else vnm.check(command, body)
        timeout = _lime_timeout(query)
        target = _chosen(self.server.vnm, query, vnm.switch_of(req), "VNM migrator")
        if isinstance(req, vnm.Prepare):
            try:
                topo = target.wiring()
            except (SdnmigError, OSError) as e:
                raise lime_client.Unavailable(f"cannot read the bridges' wiring: {e}") from None
            req = req.request(topo)
        return vnm.run(target.redis, req, timeout)

    def _bus(self) -> Any:
        try:
            bus = self.server.bus_factory()
        except (SdnmigError, OSError) as e:  # a damaged bus record, an unreadable password
            raise ops.BusError(f"bus: {e}") from None
        if bus is None:
            raise ops.BusError("no bus: no controllers are running in this state dir")
        return bus

    def _authorized(self) -> bool:
        scheme, _, given = (self.headers.get("Authorization") or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode("utf-8", "surrogateescape"), self.server.token)

    def _body(self) -> Dict[str, Any]:
        if self.headers.get("Transfer-Encoding"):
            raise HttpError(411, "send the body with a Content-Length, not chunked")
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            raise HttpError(411, "a JSON body with a Content-Length is required")
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError
        except ValueError:
            raise HttpError(400, f"bad Content-Length {raw_length!r}") from None
        if length > MAX_BODY:
            if length <= DRAIN_LIMIT:
                self.rfile.read(length)
            raise HttpError(413, f"body of {length} bytes is over the {MAX_BODY}-byte limit")
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError as e:
            raise HttpError(400, f"body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise HttpError(400, "body must be a JSON object")
        return body

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="sdnmig"')
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        LOG.info("%s %s", self.address_string(), format % args)
