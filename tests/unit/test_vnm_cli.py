"""`sdnmig vnm ...` and sdnmig.vnm against a fake VNM app on a private Redis.

The fake answers on `vnm:ops` with a real ryu_apps.vnm.core.Vnm (plan, then commit, no steps run),
so the whole command sequence and the app's refusals come back as they would. The wiring is the
VNM testbed's, written by hand (test_lime_plan.VNM) in place of sdnmig.lime_topo.topology. Bad
input must fail with a one-line error before any instance or wiring is looked up, and with
nothing published.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

from fakebus import FakeListener, PrivateRedis
from test_api_lime import _register
from test_lime_client import FakeShim, redis_server  # noqa: F401 -- fixture
from test_lime_plan import VNM
from test_vnm_plan import EXPECTED
from ryu_apps.vnm import core
from sdnmig import cli, lime, lime_topo, vnm
from sdnmig.errors import SdnmigError

PAIRS = "0x11=0x21,0x12=0x22,0x13=0x23,0x14=0x24"
PREPARE = ("prepare", "--algorithm", "alap", "--pairs", PAIRS, "--tunnel-switch", "0x30",
           "--host", "h1=0x11:4", "--host", "h2=0x14:4")
NAMED = {**EXPECTED, "hosts": {"h1": EXPECTED["hosts"]["0x11:4"],
                               "h2": EXPECTED["hosts"]["0x14:4"]}}


def vnm_answer(v: core.Vnm, req: Dict[str, Any]) -> Dict[str, Any]:
    """What the VNM app answers, its steps taken as done at once."""
    body = {k: x for k, x in req.items() if k not in ("op", "reply")}
    try:
        steps = v.plan(req["op"], body)
        v.commit(req["op"], body)
    except core.VnmError as e:
        return {"ok": False, "error": str(e), "state": v.to_doc()}
    return {"ok": True, "state": v.to_doc(), "ms": 1.5,
            "steps": [{"kind": s.kind, "ms": 0.5} for s in steps]}


class FakeVnm(FakeShim):
    """Listens on vnm:ops; answers with `answer(req)` (default: a real core.Vnm's answer)."""

    def __init__(self, server: PrivateRedis) -> None:
        self.vnm = core.Vnm()
        self.answer = lambda req: vnm_answer(self.vnm, req)
        self.received: List[Dict[str, Any]] = []
        FakeListener.__init__(self, server, core.OPS_CHANNEL, "fake VNM app")


@pytest.fixture
def app(redis_server: PrivateRedis) -> Iterator[FakeVnm]:  # noqa: F811
    fake = FakeVnm(redis_server)
    yield fake
    fake.close()


@pytest.fixture
def wiring(monkeypatch: pytest.MonkeyPatch) -> List[Optional[str]]:
    """The hand-written VNM testbed in place of this machine's bridges; records each read."""
    read: List[Optional[str]] = []

    def topology(controller: Optional[str] = None) -> Any:
        read.append(controller)
        return VNM
    monkeypatch.setattr(lime_topo, "topology", topology)
    return read


def _vnm_instance(state: Path, server: PrivateRedis, ident: str = "c1") -> None:
    _register(state, server, ident, apps=(lime.LIME_APP, vnm.VNM_APP))


def _sdnmig(state: Path, *args: str) -> int:
    return cli.main(["--state-dir", str(state), "vnm", *args])


def _sent(fake: FakeVnm) -> List[Dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "reply"} for r in fake.received]


def test_a_whole_alap_migration_from_the_command_line(
        tmp_path: Path, redis_server: PrivateRedis, app: FakeVnm,  # noqa: F811
        wiring: List[Optional[str]], capsys: pytest.CaptureFixture) -> None:
    _vnm_instance(tmp_path, redis_server)
    assert _sdnmig(tmp_path, *PREPARE) == 0
    out = capsys.readouterr().out
    assert "prepare: done in 1.5 ms (patch 0.5 ms, lime 0.5 ms)" in out, out
    assert "migration: prepared (alap)" in out and "h1    0x11  not yet" in out, out
    assert wiring == ["tcp:127.0.0.1:1"], "the wiring of the chosen instance's bridges"
    (req,) = _sent(app)
    assert req["op"] == "prepare" and req["algorithm"] == "alap"
    assert core.layout_from(req["layout"]) == core.layout_from(NAMED)
    assert _sdnmig(tmp_path, "migrate", "h1") == 0
    assert "h1    0x21  yes" in capsys.readouterr().out
    assert _sdnmig(tmp_path, "migrate", "h2", "--algorithm", "alap", "--json") == 0
    assert json.loads(capsys.readouterr().out)["state"]["moved"] == ["h1", "h2"]
    assert _sdnmig(tmp_path, "finalize") == 0
    assert "finalize: done in 1.5 ms (lime 0.5 ms, unpatch 0.5 ms)" in capsys.readouterr().out
    assert _sdnmig(tmp_path, "status") == 0
    assert "migration: finalized (alap)" in capsys.readouterr().out
    assert [r["op"] for r in _sent(app)] == ["prepare", "migrate", "migrate", "finalize",
                                            "status"]
    assert _sent(app)[1:3] == [{"op": "migrate", "host": "h1"},
                               {"op": "migrate", "host": "h2", "algorithm": "alap"}]


def test_the_apps_refusals_are_one_line_errors(
        tmp_path: Path, redis_server: PrivateRedis, app: FakeVnm,  # noqa: F811
        wiring: List[Optional[str]], capsys: pytest.CaptureFixture) -> None:
    _vnm_instance(tmp_path, redis_server)
    assert _sdnmig(tmp_path, "status") == 0
    assert capsys.readouterr().out.strip() == "migration: idle (nothing prepared)"
    assert _sdnmig(tmp_path, "finalize") == 2
    assert capsys.readouterr().err == \
        "sdnmig: the VNM migrator refused finalize: nothing is prepared: prepare first\n"
    assert _sdnmig(tmp_path, *PREPARE[:-4]) == 0   # unnamed hosts: 0x11:4, 0x14:4
    capsys.readouterr()
    for args, error in [(("migrate", "h1"), "unknown host 'h1': known 0x11:4, 0x14:4"),
                        (("migrate", "0x11:4", "--algorithm", "asap"),
                         "cannot change mid-migration"),
                        (("finalize",), "hosts not moved yet: 0x11:4, 0x14:4")]:
        assert _sdnmig(tmp_path, *args) == 2
        err = capsys.readouterr().err
        assert err.startswith("sdnmig: the VNM migrator refused ") and error in err, err
    assert app.vnm.state == core.PREPARED and app.vnm.moved == ()


def test_plan_prints_the_request_and_sends_nothing(
        tmp_path: Path, app: FakeVnm, wiring: List[Optional[str]],
        capsys: pytest.CaptureFixture) -> None:
    assert _sdnmig(tmp_path, *PREPARE, "--plan") == 0   # no instance: every bridge is read
    req = json.loads(capsys.readouterr().out)
    assert core.layout_from(req["layout"]) == core.layout_from(NAMED) and wiring == [None]
    assert _sdnmig(tmp_path, "migrate", "h1", "--plan") == 0
    assert json.loads(capsys.readouterr().out) == {"op": "migrate", "host": "h1"}
    assert not app.received


@pytest.mark.parametrize("args,message", [
    (("prepare", "--algorithm", "fast", "--pairs", PAIRS, "--tunnel-switch", "0x30"),
     "unknown algorithm 'fast': use alap or asap"),
    (("migrate", "h1", "--algorithm", "fast"), "unknown algorithm 'fast'"),
    (("finalize", "--algorithm", "ALAP"), "unknown algorithm 'ALAP'"),
    (("prepare", "--algorithm", "alap", "--pairs", "0x11", "--tunnel-switch", "0x30"),
     "--pairs '0x11': write SWITCH=DPID"),
    (("prepare", "--algorithm", "alap", "--pairs", "0x11=x", "--tunnel-switch", "0x30"),
     "'x' is not a whole number"),
    (("prepare", "--algorithm", "alap", "--pairs", ",", "--tunnel-switch", "0x30"),
     "at least one pair"),
    (("prepare", "--algorithm", "alap", "--pairs", "0x11=0x21,0x11=0x22",
      "--tunnel-switch", "0x30"), "switch 0x11 given twice"),
    (("prepare", "--algorithm", "alap", "--pairs", "0x11=0x21,0x12=0x21",
      "--tunnel-switch", "0x30"), "two old switches have the same new one"),
    (("prepare", "--algorithm", "alap", "--pairs", "0x11=0x21,0x21=0x22",
      "--tunnel-switch", "0x30"), "0x21 is in both networks"),
    (("prepare", "--algorithm", "alap", "--pairs", PAIRS, "--tunnel-switch", "0x21"),
     "the tunnel switch 0x21 is also one of the networks' switches"),
    (("prepare", "--algorithm", "alap", "--pairs", PAIRS, "--tunnel-switch", "t0"),
     "not a datapath id"),
    (("prepare", "--algorithm", "alap", "--pairs", PAIRS, "--tunnel-switch", "0x30",
      "--host", "h1"), "--host 'h1': write NAME=SWITCH:PORT"),
    (("prepare", "--algorithm", "alap", "--pairs", PAIRS, "--tunnel-switch", "0x30",
      "--host", "h1=0x11:x"), "'x' is not a whole number"),
    (("prepare", "--algorithm", "alap", "--pairs", PAIRS, "--tunnel-switch", "0x30",
      "--host", "h1=0x11:4", "--host", "h1=0x14:4"), "--host: h1 given twice"),
    (("status", "--timeout", "0"), "timeout"),
])
def test_bad_input_fails_before_anything_is_looked_up(
        tmp_path: Path, redis_server: PrivateRedis, app: FakeVnm,  # noqa: F811
        wiring: List[Optional[str]], capsys: pytest.CaptureFixture, args: tuple,
        message: str) -> None:
    _vnm_instance(tmp_path, redis_server)
    assert _sdnmig(tmp_path, *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("sdnmig: ") and message in err and err.count("\n") == 1, err
    assert not app.received and not wiring


def test_a_host_the_wiring_does_not_have_fails_after_planning_with_nothing_sent(
        tmp_path: Path, redis_server: PrivateRedis, app: FakeVnm,  # noqa: F811
        wiring: List[Optional[str]], capsys: pytest.CaptureFixture) -> None:
    _vnm_instance(tmp_path, redis_server)
    assert _sdnmig(tmp_path, *PREPARE[:-2], "--host", "h9=0x12:4") == 2
    assert "host h9: port 4 of 0x12 leads to no host" in capsys.readouterr().err
    assert not app.received and wiring == ["tcp:127.0.0.1:1"]


def test_a_missing_host_or_algorithm_is_a_usage_error(tmp_path: Path, app: FakeVnm) -> None:
    for args in (("migrate",), ("prepare", "--pairs", PAIRS, "--tunnel-switch", "0x30")):
        with pytest.raises(SystemExit) as e:
            _sdnmig(tmp_path, *args)
        assert e.value.code == 2
    assert not app.received


def test_no_vnm_app_listening(tmp_path: Path, redis_server: PrivateRedis,  # noqa: F811
                              capsys: pytest.CaptureFixture) -> None:
    _vnm_instance(tmp_path, redis_server)
    assert _sdnmig(tmp_path, "status") == 2
    assert "nobody listens on vnm:ops: is the VNM migrator (app 'vnm') running" in \
        capsys.readouterr().err


def test_choosing_the_instance(tmp_path: Path, redis_server: PrivateRedis) -> None:  # noqa: F811
    _register(tmp_path, redis_server, "c1")
    with pytest.raises(SdnmigError, match=r"no instance in .* runs the VNM migrator: start one "
                                          r"with 'sdnmig controllers start --apps lime,vnm"):
        vnm.choose(tmp_path)
    with pytest.raises(SdnmigError, match=r"c1 does not run the VNM migrator \(app 'vnm'\)"):
        vnm.choose(tmp_path, "c1")
    _vnm_instance(tmp_path, redis_server, "c2")
    assert vnm.choose(tmp_path).id == "c2" and lime.choose(tmp_path, "c2").id == "c2"
    _vnm_instance(tmp_path, redis_server, "c3")
    with pytest.raises(SdnmigError, match=r"several instances run the VNM migrator \(c2, c3\)"):
        vnm.choose(tmp_path, switch=0x11)
    assert vnm.choose(tmp_path, "c3").id == "c3"


def test_status_for_people_lists_the_networks_and_hosts() -> None:
    v = core.Vnm()
    vnm_answer(v, {"op": "prepare", "algorithm": "asap", "layout": NAMED})
    vnm_answer(v, {"op": "migrate", "host": "h2"})
    text = vnm.format_answer("status", {"ok": True, "state": v.to_doc()})
    assert text.splitlines() == [
        "migration: prepared (asap)",
        "networks: 0x11->0x21, 0x12->0x22, 0x13->0x23, 0x14->0x24 through the tunnel switch 0x30",
        "host  on    moved", "h1    0x11  not yet", "h2    0x24  yes"]
