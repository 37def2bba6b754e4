"""`/lime/<op>` of sdnmig.api and `sdnmig lime ...`, against a fake shim on a private Redis.

The HTTP tests check routing, methods, the body checks (nothing malformed reaches the shim) and
status codes; the command-line tests check the instance choice, argument parsing, the explicit
overrides (no wiring is read when every place is given) and the one-line errors.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from test_api import Api
from test_lime_client import FakeShim, redis_server, shim  # noqa: F401 -- fixtures
from fakebus import PrivateRedis
from sdnmig import cli, instances, lime
from sdnmig.errors import SdnmigError


@pytest.fixture
def web(redis_server: PrivateRedis) -> Iterator[Api]:  # noqa: F811
    chosen: list = []

    def shims(ident: Optional[str], switch: Optional[int]) -> Any:
        chosen.append((ident, switch))
        if ident == "nobody":
            raise SdnmigError("no instance nobody in /x (have: c1)")
        return redis_server.client
    srv = Api(lambda: None)
    srv.server.shims = shims
    srv.chosen = chosen  # type: ignore[attr-defined]
    yield srv
    srv.close()


CLONE = {"switch": "0x3", "onto": 259, "ports": {"1": 1, "2": 2},
         "neighbours": [[1, 2, 3], [2, 2, 3]]}


def test_status_and_an_operation_reach_the_shim_checked(web: Api, shim: FakeShim) -> None:
    status, body = web.call("GET", "/lime/status")
    assert status == 200 and body["switches"] == {"0x3": ["0x103", "0x3"]}
    status, body = web.call("POST", "/lime/clone?controller=c1", CLONE)
    assert status == 200 and body["instances"] == [3, 259], body
    req = shim.received[-1]
    assert {k: v for k, v in req.items() if k != "reply"} == {
        "op": "clone", "switch": 3, "onto": 259, "ports": {"1": 1, "2": 2},
        "neighbours": [[1, 2, 3], [2, 2, 3]]}
    assert web.chosen == [(None, None), ("c1", 3)]  # type: ignore[attr-defined]
    status, _ = web.call("POST", "/lime/move-host", {"switch": 3, "port": 1, "onto": 259,
                                                     "onto_port": 2})
    assert status == 200 and shim.received[-1]["op"] == "move_host"
    status, _ = web.call("POST", "/lime/retire_ensemble",
                         {"steps": [{"switch": 3, "instance": 3}]})
    assert status == 200 and web.chosen[-1] == (None, 3)  # type: ignore[attr-defined]


@pytest.mark.parametrize("method,path,body,code,message", [
    ("GET", "/lime/fly", None, 404, "no such path"),
    ("GET", "/lime/", None, 404, "no such path"),
    ("POST", "/lime/status", {}, 405, "takes GET"),
    ("GET", "/lime/clone", None, 405, "takes POST"),
    ("POST", "/lime/clone", {"switch": 3}, 400, "'onto' is required"),
    ("POST", "/lime/clone", {**CLONE, "op": "retire"}, 400, "unknown field"),
    ("POST", "/lime/retire", {"switch": 3, "instance": "three"}, 400, "not a whole number"),
    ("POST", "/lime/retire", [1], 400, "JSON object"),
    ("POST", "/lime/retire?timeout=x", {"switch": 3, "instance": 3}, 400, "timeout"),
    ("POST", "/lime/retire?timeout=0", {"switch": 3, "instance": 3}, 400, "timeout"),
])
def test_bad_requests_never_reach_the_shim(web: Api, shim: FakeShim, method: str, path: str,
                                           body: Any, code: int, message: str) -> None:
    status, got = web.call(method, path, body)
    assert status == code and message in got["error"], got
    assert not shim.received


def test_the_token_is_needed(web: Api, shim: FakeShim) -> None:
    assert web.call("GET", "/lime/status", token="wrong")[0] == 401
    assert not shim.received


def test_refusal_is_400_no_shim_503_silence_504(web: Api, shim: FakeShim,
                                                 redis_server: PrivateRedis) -> None:
    status, got = web.call("POST", "/lime/retire", {"switch": 3, "instance": 3}, )
    assert status == 200
    shim.answer = lambda req: {"ok": False, "error": "0x3 is the last instance of 0x3"}
    status, got = web.call("POST", "/lime/retire", {"switch": 3, "instance": 3})
    assert status == 400 and "last instance" in got["error"], got
    status, got = web.call("GET", "/lime/status?controller=nobody")
    assert status == 503 and "no instance nobody" in got["error"], got
    shim.answer = lambda req: None
    status, got = web.call("GET", "/lime/status?timeout=0.3")
    assert status == 504 and "no answer" in got["error"], got


def test_no_listener_is_503(web: Api) -> None:
    status, got = web.call("GET", "/lime/status")
    assert status == 503 and "nobody listens" in got["error"], got


def test_a_server_without_shims_is_503() -> None:
    srv = Api(lambda: None)
    try:
        status, got = srv.call("GET", "/lime/status")
        assert status == 503 and "no LIME shims" in got["error"]
    finally:
        srv.close()


# -- the command line -----------------------------------------------------------------------------

def _register(state: Path, server: PrivateRedis, ident: str = "c1",
              apps: tuple = (lime.LIME_APP, "ryu_apps.learning.app"), **extra: str) -> None:
    known = instances.Registry(state).load()
    inst = instances.Instance(id=ident, of_port=1, redis_port=server.port, apps=list(apps),
                              master_of="*", dir=str(state / ident), extra_conf=dict(extra))
    inst.path.mkdir(parents=True, exist_ok=True)
    (inst.path / "redis.password").write_text(server.password + "\n")
    known[ident] = inst
    instances.Registry(state).save(known)


def _sdnmig(state: Path, *args: str) -> int:
    return cli.main(["--state-dir", str(state), "lime", *args])


def test_cli_status_and_operations(tmp_path: Path, redis_server: PrivateRedis,  # noqa: F811
                                   shim: FakeShim, capsys: pytest.CaptureFixture) -> None:
    _register(tmp_path, redis_server)
    assert _sdnmig(tmp_path, "status") == 0
    out = capsys.readouterr().out
    assert "0x3" in out and "0x103, 0x3" in out, out
    assert _sdnmig(tmp_path, "retire", "3", "--instance", "0x103") == 0
    assert "retire: logical switch 0x3 now on 0x3, 0x103 (1.5 ms)" in capsys.readouterr().out
    assert shim.received[-1]["instance"] == 0x103
    # Every place given: nothing is planned (no OVS here), the request goes as given.
    assert _sdnmig(tmp_path, "clone", "3", "--onto", "0x103", "--ports", '{"1": 1, "2": 2}',
                   "--tunnels", "{}", "--neighbours", "[[1, 2, 3]]", "--json") == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert shim.received[-1]["ports"] == {"1": 1, "2": 2}
    assert _sdnmig(tmp_path, "retire-ensemble", "1=1", "2=0x2") == 0
    assert shim.received[-1]["steps"] == [{"switch": 1, "instance": 1},
                                          {"switch": 2, "instance": 2}]
    assert _sdnmig(tmp_path, "move-host", "3", "2", "--onto", "0x103", "--onto-port", "2") == 0
    assert shim.received[-1]["onto_port"] == 2


def test_cli_plan_prints_the_request_and_sends_nothing(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    assert _sdnmig(tmp_path, "retire", "3", "--instance", "3", "--plan") == 0
    assert json.loads(capsys.readouterr().out) == {"op": "retire", "switch": 3, "instance": 3}


@pytest.mark.parametrize("args,message", [
    (("status",), "no instance in"),
    (("status", "--controller", "c9"), "no instance c9"),
    (("retire", "3", "--instance", "x"), "not a datapath id"),
    (("clone", "3", "--onto", "0x103", "--ports", "{", "--tunnels", "{}", "--neighbours", "[]"),
     "--ports: not JSON"),
    (("clone", "3", "--onto", "0x103", "--ports", "[]", "--tunnels", "{}", "--neighbours", "[]"),
     "ports must be a JSON object"),
    (("retire-ensemble", "3"), "write SWITCH=DPID"),
    (("status", "--timeout", "0"), "timeout"),
])
def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, args: tuple,
                                 message: str) -> None:
    assert _sdnmig(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdnmig: ") and message in err and err.count("\n") == 1, err


def test_cli_refusal_and_no_shim(tmp_path: Path, redis_server: PrivateRedis,  # noqa: F811
                                 capsys: pytest.CaptureFixture) -> None:
    _register(tmp_path, redis_server)
    assert _sdnmig(tmp_path, "status") == 2
    assert "nobody listens on lime:ops" in capsys.readouterr().err
    fake = FakeShim(redis_server)
    try:
        fake.answer = lambda req: {"ok": False, "error": "logical switch 0x3 is busy"}
        assert _sdnmig(tmp_path, "retire", "3", "--instance", "3") == 2
        assert "the shim refused retire: logical switch 0x3 is busy" in capsys.readouterr().err
    finally:
        fake.close()


def test_choosing_the_instance(tmp_path: Path, redis_server: PrivateRedis) -> None:  # noqa: F811
    _register(tmp_path, redis_server, "c1", apps=("ryu_apps.learning.app",))
    with pytest.raises(SdnmigError, match="no instance in .* runs the LIME shim"):
        lime.choose(tmp_path)
    with pytest.raises(SdnmigError, match="c1 does not run the LIME shim"):
        lime.choose(tmp_path, "c1")
    _register(tmp_path, redis_server, "c2", lime_spares="0x103,0x104")
    assert lime.choose(tmp_path).id == "c2"
    assert lime.spares_of(lime.choose(tmp_path)) == [0x103, 0x104]
    _register(tmp_path, redis_server, "c3")
    with pytest.raises(SdnmigError, match=r"several instances .*\(c2, c3\).*--controller"):
        lime.choose(tmp_path, switch=3)
    assert lime.choose(tmp_path, "c3").id == "c3"
