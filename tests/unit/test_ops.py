"""`sdnmig.ops` and its CLI commands against a private Redis bus and a fake controller c1.

Each bad request must be refused before anything reaches the controller (`received` stays empty);
a good one must reach it with the body the controllers expect and come back with its record.
"""
from __future__ import annotations

import json
from typing import Any, List

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

import fakebus
from fakebus import FakeController, PrivateRedis, record
from ryu_apps.erc import wire
from sdnmig import cli, instances, ops, ovs
from sdnmig.errors import SdnmigError

server, bus, controller = fakebus.server, fakebus.bus, fakebus.controller  # fixtures


# -- parse_dpid -----------------------------------------------------------------------------------

@pytest.mark.parametrize("given,dpid", [("1", 1), ("0x1f", 31), ("0X1F", 31), (" 42 ", 42),
                                        (7, 7), ("0xffffffffffffffff", 2 ** 64 - 1)])
def test_dpid_in_decimal_or_hex(given: Any, dpid: int) -> None:
    assert ops.parse_dpid(given) == dpid


@pytest.mark.parametrize("given", ["s1", "0xg", "", "1.5", 1.0, True, None, [1]])
def test_a_bad_dpid_is_refused(given: Any) -> None:
    with pytest.raises(SdnmigError, match="not a datapath id"):
        ops.parse_dpid(given)


@pytest.mark.parametrize("given", ["-1", "0x10000000000000000", 2 ** 64])
def test_an_out_of_range_dpid_is_refused(given: Any) -> None:
    with pytest.raises(SdnmigError, match="out of range"):
        ops.parse_dpid(given)


# -- migrate: the happy paths ---------------------------------------------------------------------

def test_meta_migration_reaches_the_master_and_returns_its_record(
        bus: redis.Redis, controller: FakeController) -> None:
    rec = ops.migrate(bus, "0x1", to=["c2", "c3"], commit="phase1", transfer="shared",
                      timeout=3)
    [msg] = controller.received
    assert (msg.type, msg.dpid, msg.src, msg.mig) == (wire.OP_MIGRATE, 1, "op", rec["mig"])
    assert {k: v for k, v in msg.body.items() if k != "reply"} == {
        "to": ["c2", "c3"], "auto": None, "mode": "meta", "commit": "phase1",
        "transfer": "shared", "timeout_s": 3.0}
    assert msg.body["reply"].startswith(ops.REPLY_PREFIX)
    assert controller.reply_listeners == [1], "the reply channel must be subscribed before"
    assert (rec["outcome"], rec["winner"]) == ("committed", "c2")


def test_fixed_migration_names_one_target(bus: redis.Redis, controller: FakeController) -> None:
    ops.migrate(bus, 1, fixed="c3")
    body = controller.received[0].body
    assert (body["to"], body["mode"], body["auto"]) == (["c3"], "fixed", None)


def test_auto_migration_leaves_the_choice_to_the_controller(
        bus: redis.Redis, controller: FakeController) -> None:
    ops.migrate(bus, 1, auto=2)
    body = controller.received[0].body
    assert (body["to"], body["mode"], body["auto"]) == ([], "meta", 2)


def test_an_aborted_migration_is_returned_not_raised(
        bus: redis.Redis, controller: FakeController) -> None:
    controller.answer = lambda m: {"ok": False, "error": "timeout", "record": record(m, "aborted")}
    rec = ops.migrate(bus, 1, to=["c2"])
    assert (rec["outcome"], rec["winner"]) == ("aborted", None)


def test_stray_messages_on_the_reply_channel_are_ignored(
        bus: redis.Redis, controller: FakeController) -> None:
    other = wire.Msg(wire.OP_RESULT, "not-ours", 1, "c1", {"ok": True, "record": {}})
    no_ok = wire.Msg(wire.OP_RESULT, "placeholder", 1, "c1", {"record": {}})
    controller.noise = [b"not json", wire.encode(other), wire.encode(no_ok)]
    assert ops.migrate(bus, 1, to=["c2"])["outcome"] == "committed"


def test_a_bus_client_decoding_responses_works_too(
        server: PrivateRedis, controller: FakeController) -> None:
    text_bus = redis.Redis(host=server.host, port=server.port, password=server.password,
                           decode_responses=True)
    try:
        assert ops.migrate(text_bus, 1, to=["c2"])["outcome"] == "committed"
        assert ops.status(text_bus)["masters"]["0x1"] == "c1"
    finally:
        text_bus.close()


# -- migrate: refused before anything is sent -----------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    ({"to": ["c2"], "commit": "phase3"}, "commit 'phase3' is not one of phase1, phase2"),
    ({"to": ["c2"], "transfer": "rsync"}, "transfer 'rsync' is not one of copy, shared"),
    ({"to": ["c2"], "mode": "fast"}, "mode 'fast' is not one of meta, fixed"),
    ({"to": ["c2", "c3"], "mode": "fixed"}, "exactly one controller"),
    ({"fixed": "c2", "mode": "meta"}, "contradicts"),
    ({}, "exactly one of to .* got none"),
    ({"to": ["c2"], "fixed": "c3"}, "exactly one of .* got to, fixed"),
    ({"to": ["c2"], "auto": 1}, "got to, auto"),
    ({"to": []}, "non-empty list"),
    ({"to": "c2,c3"}, "non-empty list"),
    ({"to": ["c2", ""]}, "not a controller id"),
    ({"to": ["c2", "c3", "c2"]}, "names c2 more than once"),
    ({"fixed": 3}, "not a controller id"),
    ({"auto": 0}, "at least 1"),
    ({"auto": True}, "at least 1"),
    ({"auto": 4}, "only 3 other controller"),
    ({"to": ["c2"], "timeout": 0}, "timeout 0"),
    ({"to": ["c2"], "timeout": float("nan")}, "timeout nan"),
    ({"to": ["c2"], "timeout": "5"}, "timeout '5'"),
    ({"to": ["c2", "c9"]}, r"unknown controller c9: not in ctl:instances \(known: c1, c2"),
    ({"fixed": "c9"}, "unknown controller c9"),
    ({"to": ["c2", "c1"]}, "c1 is already MASTER of switch 0x1"),
    ({"fixed": "c1"}, "c1 is already MASTER"),
])
def test_bad_migrations_are_refused_before_sending(
        bus: redis.Redis, controller: FakeController, kwargs: Any, match: str) -> None:
    with pytest.raises(SdnmigError, match=match):
        ops.migrate(bus, 1, **kwargs)
    assert controller.received == []


def test_a_switch_without_master_is_refused(bus: redis.Redis, controller: FakeController) -> None:
    with pytest.raises(SdnmigError, match="switch 0x63 has no known MASTER"):
        ops.migrate(bus, 99, to=["c2"])
    assert controller.received == []


def test_an_initiator_that_does_not_listen_is_refused(
        bus: redis.Redis, controller: FakeController) -> None:
    with pytest.raises(SdnmigError, match="c2 .MASTER of switch 0x2. is not running"):
        ops.migrate(bus, 2, to=["c3"])
    assert controller.received == []


def test_a_refusal_by_the_controller_is_an_error(
        bus: redis.Redis, controller: FakeController) -> None:
    controller.answer = lambda m: {"ok": False, "error": "a migration is in flight", "record": None}
    with pytest.raises(SdnmigError, match="c1 refused the migration: a migration is in flight"):
        ops.migrate(bus, 1, to=["c2"])


def test_no_answer_times_out(bus: redis.Redis, controller: FakeController) -> None:
    controller.answer = lambda m: None
    with pytest.raises(ops.NoAnswer, match="no answer from c1 within 0.3 s"):
        ops.migrate(bus, 1, to=["c2"], timeout=0.2, grace=0.1)
    assert len(controller.received) == 1


def test_a_bus_that_is_down_is_a_bus_error(server: PrivateRedis) -> None:
    dead = redis.Redis(host=server.host, port=server.port, password="wrong",
                       retry=Retry(NoBackoff(), 0))
    with pytest.raises(ops.BusError, match="^bus: "):
        ops.migrate(dead, 1, to=["c2"])
    with pytest.raises(ops.BusError):
        ops.status(dead)


def test_a_damaged_instance_entry_is_a_bus_error(bus: redis.Redis) -> None:
    bus.hset(wire.INSTANCES_KEY, "c5", "{not json")
    with pytest.raises(ops.BusError, match="ctl:instances entry 'c5' is not a JSON object"):
        ops.status(bus)


# -- cancel ---------------------------------------------------------------------------------------

def test_cancel_reaches_the_master(bus: redis.Redis, controller: FakeController) -> None:
    result = ops.cancel(bus, "0xabc", timeout=2)
    [msg] = controller.received
    assert (msg.type, msg.dpid, msg.src) == (wire.OP_CANCEL, 0xABC, "op")
    assert list(msg.body) == ["reply"]
    assert result["ok"] and result["record"]["outcome"] == "cancelled"


def test_cancel_refusals(bus: redis.Redis, controller: FakeController) -> None:
    with pytest.raises(SdnmigError, match="has no known MASTER"):
        ops.cancel(bus, 99)
    with pytest.raises(SdnmigError, match="c2 .* is not running"):
        ops.cancel(bus, 2)
    with pytest.raises(SdnmigError, match="timeout -1"):
        ops.cancel(bus, 1, timeout=-1)
    assert controller.received == []
    controller.answer = lambda m: {"ok": False, "error": "nothing in flight", "record": None}
    with pytest.raises(SdnmigError, match="c1 could not cancel: nothing in flight"):
        ops.cancel(bus, 1)


# -- status and history ---------------------------------------------------------------------------

def test_status_lists_masters_inflight_and_instances(
        bus: redis.Redis, controller: FakeController) -> None:
    bus.hset(wire.INFLIGHT_KEY, "m2", json.dumps({"mig": "m2", "dpid": 1, "started": 20}))
    bus.hset(wire.INFLIGHT_KEY, "m1", json.dumps({"mig": "m1", "dpid": 3, "started": 10}))
    st = ops.status(bus)
    assert st["masters"] == {"0x1": "c1", "0x2": "c2", "0xabc": "c1"}
    assert [r["mig"] for r in st["inflight"]] == ["m1", "m2"]
    assert [(i["id"], i["listening"]) for i in st["instances"]] == [
        ("c1", True), ("c2", False), ("c3", False), ("c4", False)]


def test_history_is_newest_first_and_limited(bus: redis.Redis) -> None:
    for n in range(5):
        bus.lpush(wire.HISTORY_KEY, json.dumps({"mig": f"m{n}"}))
    assert [r["mig"] for r in ops.history(bus, 3)] == ["m4", "m3", "m2"]
    assert len(ops.history(bus)) == 5
    for bad in (0, -1, wire.HISTORY_CAP + 1, "3", True):
        with pytest.raises(SdnmigError, match="limit"):
            ops.history(bus, bad)


# -- format_record --------------------------------------------------------------------------------

def test_format_record_shows_winner_timings_and_candidates() -> None:
    msg = wire.Msg(wire.OP_MIGRATE, "m1", 1, "op", {"to": ["c2", "c3"], "mode": "meta"})
    text = ops.format_record(record(msg))
    assert "switch 0x1: committed, winner c2" in text
    assert ("total 42.5 ms; phase1 10.0 ms, phase2 20.0 ms, phase3 12.5 ms; then buffer drained "
            "in 3.2 ms") in text
    rows = text.splitlines()[-3:]
    assert rows[0].split() == ["candidate", "state", "phase1", "ms", "phase2", "ms", "result"]
    assert rows[1].split() == ["c2", "*", "DONE", "10.0", "20.0", "won"]
    assert rows[2].split() == ["c3", "LOSER", "10.0", "-", "rolled", "back"]


def test_format_record_survives_a_sparse_record() -> None:
    text = ops.format_record({"outcome": "refused", "phases_ms": None, "detail": None})
    assert "refused, winner none" in text and "phase1 - ms" in text


# -- the CLI --------------------------------------------------------------------------------------

@pytest.fixture
def cli_bus(server: PrivateRedis, monkeypatch: pytest.MonkeyPatch) -> PrivateRedis:
    monkeypatch.setattr(instances, "load_bus", lambda state_dir: server.as_bus(), raising=False)
    return server


def run(capsys: pytest.CaptureFixture, *argv: str) -> List[Any]:
    code = cli.main(["--state-dir", "/nonexistent-sdnmig-test", *argv])
    out, err = capsys.readouterr()
    return [code, out, err]


def test_cli_migrate_prints_the_record_and_exits_0_on_commit(
        cli_bus: PrivateRedis, controller: FakeController, capsys: pytest.CaptureFixture) -> None:
    code, out, _ = run(capsys, "migrate", "--switch", "0x1", "--to", "c2, c3", "--commit",
                       "phase1")
    assert code == 0 and "committed, winner c2" in out and "phase3 12.5 ms" in out
    assert controller.received[0].body["to"] == ["c2", "c3"]
    code, out, _ = run(capsys, "migrate", "--switch", "1", "--fixed", "c4", "--json")
    assert code == 0 and json.loads(out)["winner"] == "c4"


def test_cli_migrate_exits_1_when_the_migration_did_not_commit(
        cli_bus: PrivateRedis, controller: FakeController, capsys: pytest.CaptureFixture) -> None:
    controller.answer = lambda m: {"ok": False, "error": "x", "record": record(m, "aborted")}
    code, out, _ = run(capsys, "migrate", "--switch", "1", "--auto", "2")
    assert code == 1 and "aborted, winner none" in out


@pytest.mark.parametrize("argv,match", [
    (["--switch", "s1", "--to", "c2"], "not a datapath id"),
    (["--switch", "1", "--to", "c2,,c3"], "not a controller id"),
    (["--switch", "1", "--to", "c9"], "unknown controller c9"),
    (["--switch", "1", "--to", "c2", "--timeout", "0"], "timeout 0"),
    (["--switch", "1", "--to", "c2", "--fixed", "c3"], "not allowed with"),
    (["--switch", "1", "--to", "c2", "--commit", "phase9"], "invalid choice"),
])
def test_cli_migrate_exits_2_on_bad_input(
        cli_bus: PrivateRedis, controller: FakeController, capsys: pytest.CaptureFixture,
        argv: List[str], match: str) -> None:
    try:
        code, _, err = run(capsys, "migrate", *argv)
    except SystemExit as e:  # argparse's own checks
        code, err = e.code, capsys.readouterr().err
    assert code == 2 and match in err
    assert controller.received == []


def test_cli_without_a_bus_says_so(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(instances, "load_bus", lambda state_dir: None, raising=False)
    for argv in (["migrate", "--switch", "1", "--to", "c2"], ["history"],
                 ["cancel", "--switch", "1"]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and "no bus in /nonexistent-sdnmig-test" in err


def test_cli_history_and_cancel(cli_bus: PrivateRedis, controller: FakeController,
                                capsys: pytest.CaptureFixture) -> None:
    cli_bus.client.lpush(wire.HISTORY_KEY, json.dumps(
        {"mig": "m1", "dpid": 1, "initiator": "c1", "winner": "c2", "outcome": "committed",
         "total_ms": 12.25, "started": 0}))
    code, out, _ = run(capsys, "history", "--limit", "5")
    assert code == 0 and out.splitlines()[1].split()[2:] == ["m1", "0x1", "c1", "c2",
                                                            "committed", "12.2"]
    code, out, _ = run(capsys, "history", "--json")
    assert code == 0 and json.loads(out)[0]["mig"] == "m1"
    code, out, _ = run(capsys, "cancel", "--switch", "1")
    assert code == 0 and "cancelled" in out


def test_cli_status_adds_the_bus_view(cli_bus: PrivateRedis, controller: FakeController,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(ovs, "controller_links", lambda: {})
    monkeypatch.setattr(ovs, "bridge_dpids", lambda: {})
    cli_bus.client.hset(wire.INFLIGHT_KEY, "m7", json.dumps(
        {"mig": "m7", "dpid": 1, "initiator": "c1", "mode": "meta", "candidates": ["c2", "c3"]}))
    code, out, _ = run(capsys, "status")
    assert code == 0
    assert "no controller instances" in out and "no switch is connected" in out  # as before
    assert ["0xabc", "c1"] in [ln.split() for ln in out.splitlines()]
    assert ["m7", "0x1", "c1", "meta", "c2,c3", "-"] in [ln.split() for ln in out.splitlines()]
