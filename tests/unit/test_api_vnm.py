"""`/vnm/<command>` of sdnmig.api against a fake VNM app (test_vnm_cli.FakeVnm, a real core.Vnm
behind vnm:ops) on a private Redis, the wiring written by hand (test_lime_plan.VNM).

Checked: routing and methods, the body checks (nothing malformed is looked up or reaches the app),
prepare planned server-side from pairs, and the status codes of refusal, absence and silence.
"""
from __future__ import annotations

from typing import Any, Iterator, List, Optional

import pytest

from fakebus import PrivateRedis
from test_api import Api
from test_lime_client import redis_server  # noqa: F401 -- fixture
from test_lime_plan import VNM
from test_vnm_cli import NAMED, FakeVnm, app  # noqa: F401 -- fixture
from ryu_apps.vnm import core
from sdnmig import vnm
from sdnmig.errors import SdnmigError

PAIRS = {"0x11": "0x21", "0x12": "0x22", "0x13": "0x23", "0x14": "0x24"}
BY_PAIRS = {"algorithm": "alap", "pairs": PAIRS, "tunnel_switch": "0x30",
            "hosts": {"h1": "0x11:4", "h2": "0x14:4"}}


@pytest.fixture
def web(redis_server: PrivateRedis) -> Iterator[Api]:  # noqa: F811
    chosen: List[Any] = []

    def wiring() -> Any:
        chosen.append("wiring")
        return VNM

    def no_ovs() -> Any:  # as sdnmig.lime_topo fails without OVS
        raise SdnmigError("ovs-vsctl: unix:/var/run/openvswitch/db.sock: database connection "
                          "failed")

    def migrators(ident: Optional[str], switch: Optional[int]) -> vnm.Target:
        chosen.append((ident, switch))
        if ident == "nobody":
            raise SdnmigError("no instance nobody in /x (have: c1)")
        if ident == "blind":
            return vnm.Target(redis_server.client, no_ovs)
        return vnm.Target(redis_server.client, wiring)
    srv = Api(lambda: None)
    srv.server.vnm = migrators
    srv.chosen = chosen  # type: ignore[attr-defined]
    yield srv
    srv.close()


def test_a_whole_migration_over_http_with_the_layout_planned_here(
        web: Api, app: FakeVnm) -> None:  # noqa: F811
    status, body = web.call("GET", "/vnm/status")
    assert status == 200 and body["state"]["state"] == core.IDLE, body
    status, body = web.call("POST", "/vnm/prepare?controller=c1", BY_PAIRS)
    assert status == 200 and body["state"]["state"] == core.PREPARED, body
    assert web.chosen == [(None, None), ("c1", 0x11), "wiring"]  # type: ignore[attr-defined]
    req = app.received[-1]
    assert req["op"] == "prepare" and core.layout_from(req["layout"]) == core.layout_from(NAMED)
    for host in ("h1", "h2"):
        status, body = web.call("POST", "/vnm/migrate", {"host": host, "algorithm": "alap"})
        assert status == 200 and host in body["state"]["moved"], body
    status, body = web.call("POST", "/vnm/finalize?timeout=5", {})
    assert status == 200 and body["state"]["state"] == core.FINALIZED, body
    assert [s["kind"] for s in body["steps"]] == ["lime", "unpatch"]


def test_prepare_with_the_layout_whole_is_checked_and_sent_as_the_core_writes_it(
        web: Api, app: FakeVnm) -> None:  # noqa: F811
    status, body = web.call("POST", "/vnm/prepare", {"algorithm": "asap", "layout": NAMED})
    assert status == 200 and body["state"]["algorithm"] == "asap", body
    assert app.received[-1]["layout"]["pairs"] == PAIRS
    assert web.chosen == [(None, 0x11)]  # type: ignore[attr-defined] -- no wiring read


BAD_LAYOUT = {k: v for k, v in NAMED.items() if k != "patch"}


@pytest.mark.parametrize("method,path,body,code,message", [
    ("GET", "/vnm/fly", None, 404, "no such path /vnm/fly"),
    ("GET", "/vnm/", None, 404, "no such path"),
    ("POST", "/vnm/status", {}, 405, "takes GET"),
    ("GET", "/vnm/prepare", None, 405, "takes POST"),
    ("POST", "/vnm/prepare", {**BY_PAIRS, "algorithm": "fast"}, 400,
     "unknown algorithm 'fast': use alap or asap"),
    ("POST", "/vnm/prepare", {"algorithm": "fast", "layout": NAMED}, 400, "unknown algorithm"),
    ("POST", "/vnm/migrate", {"host": "h1", "algorithm": "alp"}, 400, "unknown algorithm"),
    ("POST", "/vnm/migrate", {"host": "h1", "now": True}, 400, "migrate: unknown field(s) now"),
    ("POST", "/vnm/migrate", {}, 400, "migrate: field(s) host required"),
    ("POST", "/vnm/migrate", {"host": 1}, 400, "host must be a name"),
    ("POST", "/vnm/finalize", {"force": True}, 400, "unknown field(s) force"),
    ("POST", "/vnm/prepare", {"algorithm": "alap"}, 400, "field(s) layout required"),
    ("POST", "/vnm/prepare", {"algorithm": "alap", "layout": BAD_LAYOUT}, 400,
     "the layout lacks patch"),
    ("POST", "/vnm/prepare", {**BY_PAIRS, "layout": NAMED}, 400, "not both"),
    ("POST", "/vnm/prepare", {**BY_PAIRS, "extra": 1}, 400, "unknown field(s) extra"),
    ("POST", "/vnm/prepare", {"algorithm": "alap", "pairs": PAIRS}, 400,
     "field(s) tunnel_switch required"),
    ("POST", "/vnm/prepare", {**BY_PAIRS, "pairs": ["0x11", "0x21"]}, 400,
     "pairs must map old switches to new ones"),
    ("POST", "/vnm/prepare", {**BY_PAIRS, "pairs": {}}, 400, "at least one pair"),
    ("POST", "/vnm/prepare", {**BY_PAIRS, "pairs": {"0x11": "x"}}, 400, "not a whole number"),
    ("POST", "/vnm/prepare", {**BY_PAIRS, "pairs": {"0x11": "0x21", "0x12": "0x21"}}, 400,
     "two old switches have the same new one"),
    ("POST", "/vnm/prepare", {**BY_PAIRS, "tunnel_switch": "0x14"}, 400,
     "the tunnel switch 0x14 is also one of the networks' switches"),
    ("POST", "/vnm/prepare", {**BY_PAIRS, "hosts": {"h1": "0x11"}}, 400,
     "hosts[h1] '0x11': write SWITCH:PORT"),
    ("POST", "/vnm/prepare", {**BY_PAIRS, "hosts": ["h1"]}, 400, "hosts must map names"),
    ("POST", "/vnm/migrate?timeout=x", {"host": "h1"}, 400, "timeout"),
    ("GET", "/vnm/status?timeout=0", None, 400, "timeout"),
])
def test_bad_requests_are_never_looked_up_nor_sent(web: Api, app: FakeVnm,  # noqa: F811
                                                   method: str, path: str, body: Any,
                                                   code: int, message: str) -> None:
    status, got = web.call(method, path, body)
    assert status == code and message in got["error"], got
    assert not app.received and not web.chosen  # type: ignore[attr-defined]


def test_a_plan_the_wiring_refuses_is_400_with_nothing_sent(web: Api,
                                                            app: FakeVnm) -> None:  # noqa: F811
    status, got = web.call("POST", "/vnm/prepare", {**BY_PAIRS, "hosts": {"h9": "0x12:4"}})
    assert status == 400 and "host h9: port 4 of 0x12 leads to no host" in got["error"], got
    assert not app.received


def test_refusal_400_no_app_503_silence_504(web: Api, app: FakeVnm) -> None:  # noqa: F811
    status, got = web.call("POST", "/vnm/migrate", {"host": "h1"})
    assert status == 400 and got["error"] == \
        "the VNM migrator refused migrate: nothing is prepared: prepare first", got
    status, got = web.call("GET", "/vnm/status?controller=nobody")
    assert status == 503 and "no VNM migrator to ask: no instance nobody" in got["error"], got
    status, got = web.call("POST", "/vnm/prepare?controller=blind", BY_PAIRS)
    assert status == 503 and "cannot read the bridges' wiring" in got["error"], got
    app.answer = lambda req: None
    status, got = web.call("GET", "/vnm/status?timeout=0.3")
    assert status == 504 and "no answer" in got["error"], got


def test_no_listener_is_503(web: Api) -> None:
    status, got = web.call("GET", "/vnm/status")
    assert status == 503 and "nobody listens on vnm:ops" in got["error"], got


def test_the_token_is_needed(web: Api, app: FakeVnm) -> None:  # noqa: F811
    assert web.call("GET", "/vnm/status", token="wrong")[0] == 401
    assert not app.received


def test_a_server_without_vnm_migrators_is_503() -> None:
    srv = Api(lambda: None)
    try:
        status, got = srv.call("GET", "/vnm/status")
        assert status == 503 and "no VNM migrators" in got["error"]
    finally:
        srv.close()
