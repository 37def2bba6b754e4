"""`sdnmig.api`: the HTTP front of sdnmig.ops, served on a free loopback port for each test.

The bus is a private Redis with a fake controller c1 (see fakebus); these tests check the HTTP
layer: the token on every request, status codes, the body limit, and that the operations arrive.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import stat
import threading
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Tuple

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import fakebus
from fakebus import FakeController, PrivateRedis
from ryu_apps.erc import wire
from sdnmig import api, instances
from sdnmig.errors import SdnmigError

server, bus, controller = fakebus.server, fakebus.bus, fakebus.controller  # fixtures

TOKEN = "s3cret-token"


class Api:
    """A running server and a way to ask it things."""

    def __init__(self, factory: api.BusFactory) -> None:
        self.server = api.make_server(factory, TOKEN, port=0)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def call(self, method: str, path: str, body: Any = None, token: Optional[str] = TOKEN,
             headers: Optional[Dict[str, str]] = None) -> Tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def web(bus: redis.Redis) -> Iterator[Api]:
    srv = Api(lambda: bus)
    yield srv
    srv.close()


# -- the token ------------------------------------------------------------------------------------

@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"},
                                     {"Authorization": f"Basic {TOKEN}"},
                                     {"Authorization": "Bearer"},
                                     {"Authorization": f"Bearer {TOKEN}x"},
                                     {"Authorization": "Bearer t\u00e9"}])
@pytest.mark.parametrize("method,path", [("GET", "/status"), ("POST", "/migrate"),
                                         ("GET", "/nowhere")])
def test_every_request_needs_the_token(web: Api, controller: FakeController,
                                       headers: Dict[str, str], method: str, path: str) -> None:
    status, body = web.call(method, path, {"switch": 1, "to": ["c2"]}, token=None,
                            headers=headers)
    assert status == 401 and "token" in body["error"]
    assert controller.received == []


def test_load_token_makes_a_private_token_once(tmp_path: Path) -> None:
    path = tmp_path / "state" / "api.token"
    token = api.load_token(path)
    assert len(token) == 64 and int(token, 16) >= 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert api.load_token(path) == token


def test_load_token_refuses_a_token_others_can_read_or_an_empty_one(tmp_path: Path) -> None:
    path = tmp_path / "api.token"
    path.write_text("abc\n")
    os.chmod(path, 0o644)
    with pytest.raises(SdnmigError, match="chmod 600"):
        api.load_token(path)
    os.chmod(path, 0o600)
    assert api.load_token(path) == "abc"
    path.write_text("\n")
    with pytest.raises(SdnmigError, match="is empty"):
        api.load_token(path)


def test_the_server_stays_on_loopback_unless_told_otherwise() -> None:
    with pytest.raises(SdnmigError, match="refusing to serve on 0.0.0.0"):
        api.make_server(lambda: None, TOKEN, host="0.0.0.0", port=0)
    with pytest.raises(SdnmigError, match="empty API token"):
        api.make_server(lambda: None, "", port=0)
    srv = api.make_server(lambda: None, TOKEN, host="0.0.0.0", port=0, allow_remote=True)
    srv.server_close()


# -- routes and methods ---------------------------------------------------------------------------

def test_happy_paths(web: Api, bus: redis.Redis, controller: FakeController) -> None:
    status, rec = web.call("POST", "/migrate", {"switch": "0x1", "to": ["c2", "c3"],
                                                "commit": "phase1", "timeout": 2})
    assert status == 200 and rec["outcome"] == "committed" and rec["winner"] == "c2"
    assert controller.received[-1].body["commit"] == "phase1"
    status, rec = web.call("POST", "/migrate", {"switch": 1, "fixed": "c4"})
    assert status == 200 and controller.received[-1].body["mode"] == "fixed"
    status, res = web.call("POST", "/cancel", {"switch": 1})
    assert status == 200 and res["record"]["outcome"] == "cancelled"
    status, st = web.call("GET", "/status")
    assert status == 200 and st["masters"]["0x1"] == "c1"
    for n in range(3):
        bus.lpush(wire.HISTORY_KEY, json.dumps({"mig": f"m{n}"}))
    status, hist = web.call("GET", "/history?limit=2")
    assert status == 200 and [r["mig"] for r in hist] == ["m2", "m1"]


@pytest.mark.parametrize("method,path,status", [
    ("GET", "/nowhere", 404), ("POST", "/", 404), ("GET", "/migrate", 405),
    ("POST", "/status", 405), ("DELETE", "/history", 405), ("PUT", "/cancel", 405),
])
def test_unknown_paths_and_wrong_methods(web: Api, method: str, path: str, status: int) -> None:
    got, body = web.call(method, path, {})
    assert got == status and body["error"]


@pytest.mark.parametrize("body,match", [
    (b"{not json", "not JSON"), (b"[1, 2]", "JSON object"), (b"", "JSON object"),
    ({"to": ["c2"]}, "'switch' .* is required"),
    ({"switch": 1, "to": ["c2"], "colour": "red"}, "unknown field.* colour"),
    ({"switch": "s1", "to": ["c2"]}, "not a datapath id"),
    ({"switch": 1, "to": "c2"}, "non-empty list"),
    ({"switch": 1, "to": ["c9"]}, "unknown controller c9"),
    ({"switch": 1, "to": ["c2", "c2"]}, "more than once"),
    ({"switch": 1, "to": ["c1"]}, "already MASTER"),
    ({"switch": 1, "to": ["c2"], "commit": "now"}, "commit 'now'"),
    ({"switch": 1, "to": ["c2"], "transfer": None}, "transfer None"),
    ({"switch": 1, "to": ["c2"], "timeout": -1}, "timeout -1"),
    ({"switch": 99, "to": ["c2"]}, "no known MASTER"),
    ({"switch": 2, "to": ["c3"]}, "is not running"),
])
def test_bad_migrations_are_400(web: Api, controller: FakeController, body: Any,
                                match: str) -> None:
    status, answer = web.call("POST", "/migrate", body)
    assert status == 400
    assert re.search(match, answer["error"]), answer
    assert controller.received == []


def test_bad_history_limit_and_cancel_input_are_400(web: Api) -> None:
    for path in ("/history?limit=x", "/history?limit=0"):
        assert web.call("GET", path)[0] == 400
    assert web.call("POST", "/cancel", {})[0] == 400
    assert web.call("POST", "/cancel", {"switch": 1, "dpid": 1})[0] == 400


def test_a_refusal_by_the_controller_is_400(web: Api, controller: FakeController) -> None:
    controller.answer = lambda m: {"ok": False, "error": "busy", "record": None}
    status, answer = web.call("POST", "/migrate", {"switch": 1, "to": ["c2"]})
    assert status == 400 and "refused the migration: busy" in answer["error"]


def test_a_body_over_64_kib_is_413(web: Api, controller: FakeController) -> None:
    big = {"switch": 1, "to": ["c2"], "pad": "x" * api.MAX_BODY}
    status, answer = web.call("POST", "/migrate", big)
    assert status == 413 and "limit" in answer["error"]
    conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=20)
    try:  # a huge announced body is refused before it is sent
        conn.putrequest("POST", "/migrate")
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.putheader("Content-Length", str(10 ** 9))
        conn.endheaders()
        assert conn.getresponse().status == 413
    finally:
        conn.close()
    assert controller.received == []


def test_a_body_just_under_the_limit_is_read(web: Api, controller: FakeController) -> None:
    body = json.dumps({"switch": 1, "to": ["c2"], "mode": "meta"}).encode()
    padded = body[:-1] + b" " * (api.MAX_BODY - len(body)) + b"}"
    assert len(padded) == api.MAX_BODY
    assert web.call("POST", "/migrate", padded)[0] == 200


def test_no_bus_is_503_but_bad_input_is_still_400() -> None:
    web = Api(lambda: None)
    try:
        status, answer = web.call("GET", "/status")
        assert status == 503 and "no bus" in answer["error"]
        assert web.call("POST", "/migrate", {"switch": 1, "to": ["c2"]})[0] == 503
        assert web.call("POST", "/migrate", {"switch": 1, "to": ["c2", "c2"]})[0] == 400
        assert web.call("POST", "/cancel", {"switch": "s1"})[0] == 400
        assert web.call("GET", "/history?limit=0")[0] == 400
    finally:
        web.close()


def test_an_unreadable_bus_record_is_503() -> None:
    def broken() -> None:
        raise FileNotFoundError("bus.password is gone")
    web = Api(broken)
    try:
        status, answer = web.call("GET", "/history")
        assert status == 503 and "bus.password is gone" in answer["error"]
    finally:
        web.close()


def test_a_bus_that_is_down_is_503(server: PrivateRedis) -> None:
    port = server.port
    server.close()
    dead = redis.Redis(host="127.0.0.1", port=port, password="x", socket_connect_timeout=1,
                       retry=Retry(NoBackoff(), 0))
    web = Api(lambda: dead)
    try:
        status, answer = web.call("GET", "/history")
        assert status == 503 and answer["error"].startswith("bus: ")
    finally:
        web.close()


def test_no_answer_is_504(web: Api, controller: FakeController) -> None:
    controller.answer = lambda m: None
    status, answer = web.call("POST", "/cancel", {"switch": 1, "timeout": 0.2})
    assert status == 504 and "no answer from c1" in answer["error"]


def test_bus_from_state_dir_reuses_the_client_of_the_same_bus(
        server: PrivateRedis, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    buses = [server.as_bus()]
    monkeypatch.setattr(instances, "load_bus", lambda d: buses[0], raising=False)
    factory = api.bus_from_state_dir(tmp_path)
    first = factory()
    assert factory() is first and first.ping()
    buses[0] = None
    assert factory() is None
