"""The pure parts of `sdnmig.instances`: mastership split, app names, port choice, the registry.

Nothing here starts a process or opens a socket: port probing is replaced by a fake.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterator, Set

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ryu_apps import APPS
from sdnmig import instances
from sdnmig.errors import SdnmigError
from sdnmig.instances import Instance, Registry, _master_split, free_ports, resolve_apps

IDS = ["c1", "c2", "c3"]


# -- _master_split --------------------------------------------------------------------------------

def test_master_first_gives_every_switch_to_the_first_instance() -> None:
    assert _master_split(IDS, "first") == {"c1": "*", "c2": "", "c3": ""}


def test_master_none_gives_no_switch_to_anyone() -> None:
    assert _master_split(IDS, "none") == {"c1": "", "c2": "", "c3": ""}


def test_master_explicit_split_by_instance() -> None:
    split = _master_split(IDS, "c2=1,0x2; c3=3")
    assert split == {"c1": "", "c2": "1,0x2", "c3": "3"}


def test_master_star_for_one_named_instance() -> None:
    assert _master_split(IDS, "c3=*") == {"c1": "", "c2": "", "c3": "*"}
    assert _master_split(IDS, "c3=*;") == {"c1": "", "c2": "", "c3": "*"}


def test_master_empty_spec_gives_nothing() -> None:
    assert _master_split(IDS, "") == {"c1": "", "c2": "", "c3": ""}


@pytest.mark.parametrize("spec", ["c1=1;c2=1", "c1=1;c2=0x1", "c1=1,2;c3=3,2", "c1=1,1"])
def test_a_switch_given_to_two_instances_is_rejected(spec: str) -> None:
    """A switch has exactly one master; the same dpid in two notations is the same switch."""
    with pytest.raises(SdnmigError, match="exactly one master"):
        _master_split(IDS, spec)


def test_star_with_other_masters_is_rejected() -> None:
    with pytest.raises(SdnmigError, match="only master"):
        _master_split(IDS, "c1=*;c2=5")
    with pytest.raises(SdnmigError, match="only master"):
        _master_split(IDS, "c2=5;c1=*")


def test_unknown_instance_is_rejected_and_the_known_ones_listed() -> None:
    with pytest.raises(SdnmigError, match="no instance 'c9'") as info:
        _master_split(IDS, "c9=1")
    assert "c1, c2, c3" in str(info.value)


@pytest.mark.parametrize("spec,bad", [("c1=s1", "s1"), ("c1=1,x", "x"), ("c1=1.0", "1.0")])
def test_a_bad_dpid_is_rejected(spec: str, bad: str) -> None:
    with pytest.raises(SdnmigError, match="is not a datapath id") as info:
        _master_split(IDS, spec)
    assert repr(bad) in str(info.value)


def test_naming_one_instance_twice_keeps_all_its_switches_or_is_rejected() -> None:
    """BUG: 'c1=1;c1=2' records switch 1 for c1 (so a later 'c2=1' would be refused as a
    conflict) but then overwrites c1's list with '2', so switch 1 silently ends up with no
    master at all."""
    try:
        split = _master_split(IDS, "c1=1;c1=2")
    except SdnmigError:
        return  # refusing the repeated instance is fine too
    from ryu_apps.config import parse_dpids

    assert parse_dpids(split["c1"]) == frozenset({1, 2})


@given(st.dictionaries(st.sampled_from(IDS), st.sets(st.integers(0, 2**64 - 1), max_size=4)),
       st.data())
def test_disjoint_explicit_split_round_trips_through_parse_dpids(
        assignment: dict, data: st.DataObject) -> None:
    """What _master_split hands each instance is what that instance's config parser reads."""
    from ryu_apps.config import parse_dpids

    used: Set[int] = set()
    clean = {}
    for inst, dpids in assignment.items():
        clean[inst] = dpids - used
        used |= dpids
    parts = []
    for inst, dpids in clean.items():
        notation = data.draw(st.sampled_from([str, hex]))
        parts.append(f"{inst}={','.join(notation(d) for d in sorted(dpids))}")
    split = _master_split(IDS, ";".join(parts))
    for inst in IDS:
        assert parse_dpids(split[inst]) == frozenset(clean.get(inst, set()))


# -- resolve_apps ---------------------------------------------------------------------------------

def test_short_app_names_resolve_to_their_modules() -> None:
    assert resolve_apps(["learning"]) == [APPS["learning"]]
    assert resolve_apps(["roles", "learning"]) == [APPS["roles"], APPS["learning"]]


def test_an_importable_module_path_is_accepted_as_is() -> None:
    assert resolve_apps(["sdnmig.errors"]) == ["sdnmig.errors"]


@pytest.mark.parametrize("name", ["learnin", "no.such.module", "sdnmig.no_such", "", "os/path"])
def test_unknown_app_is_rejected_with_the_choices(name: str) -> None:
    with pytest.raises(SdnmigError, match="unknown app") as info:
        resolve_apps([name])
    for short in APPS:
        assert short in str(info.value)


def test_no_app_at_all_is_rejected() -> None:
    with pytest.raises(SdnmigError, match="no app given"):
        resolve_apps([])


# -- free_ports -----------------------------------------------------------------------------------

@pytest.fixture
def busy(monkeypatch: pytest.MonkeyPatch) -> Set[int]:
    """Ports the fake probe reports as in use by someone else."""
    in_use: Set[int] = set()
    monkeypatch.setattr(instances, "port_free", lambda port, host="127.0.0.1": port not in in_use)
    return in_use


def test_free_ports_are_consecutive_when_nothing_is_taken(busy: Set[int]) -> None:
    assert free_ports(3, 6653) == [6653, 6654, 6655]


def test_free_ports_skip_taken_and_busy_ports(busy: Set[int]) -> None:
    busy.update({6654, 6657})
    assert free_ports(3, 6653, taken=[6653, 6655]) == [6656, 6658, 6659]


def test_free_ports_up_to_the_last_port(busy: Set[int]) -> None:
    assert free_ports(2, 65534) == [65534, 65535]


def test_free_ports_running_out_is_an_error(busy: Set[int]) -> None:
    busy.add(65535)
    with pytest.raises(SdnmigError, match="no 2 free TCP ports from 65534"):
        free_ports(2, 65534)


def test_zero_ports_is_an_empty_list(busy: Set[int]) -> None:
    assert free_ports(0, 1) == []


@given(st.integers(0, 5), st.integers(1000, 1100), st.sets(st.integers(1000, 1200)),
       st.sets(st.integers(1000, 1200)))
def test_free_ports_are_distinct_increasing_and_never_taken_or_busy(
        count: int, start: int, taken: Set[int], in_use: Set[int]) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(instances, "port_free", lambda port, host="127.0.0.1": port not in in_use)
        ports = free_ports(count, start, sorted(taken))
    assert len(ports) == count and ports == sorted(set(ports))
    assert all(p >= start and p not in taken and p not in in_use for p in ports)
    if ports:  # nothing usable was skipped
        skipped = set(range(start, ports[-1])) - set(ports)
        assert skipped <= taken | in_use


# -- plan (with ports and the manager faked) ------------------------------------------------------

@pytest.fixture
def planner(busy: Set[int], monkeypatch: pytest.MonkeyPatch) -> Set[int]:
    monkeypatch.setattr(instances, "manager_command", lambda platform: ["/bin/true"])
    return busy


def test_plan_chooses_ids_distinct_ports_and_masters(planner: Set[int], tmp_path: Path) -> None:
    planner.add(6654)
    plan = instances.plan(2, ["learning"], tmp_path, master="c2=0x1")
    assert [i.id for i in plan] == ["c1", "c2"]
    assert [i.of_port for i in plan] == [6653, 6655]
    assert [i.redis_port for i in plan] == [16379, 16380]
    assert [i.master_of for i in plan] == ["", "0x1"]
    assert all(i.apps == [APPS["learning"]] for i in plan)
    assert plan[1].dir == str(tmp_path / "c2")


def test_plan_in_namespaces_reuses_the_same_ports(planner: Set[int], tmp_path: Path) -> None:
    plan = instances.plan(2, ["learning"], tmp_path, netns_pids=[101, 102],
                          hosts=["10.0.0.1", "10.0.0.2"])
    assert {i.of_port for i in plan} == {6653} and {i.redis_port for i in plan} == {16379}
    assert [i.target for i in plan] == ["tcp:10.0.0.1:6653", "tcp:10.0.0.2:6653"]


@pytest.mark.parametrize("kwargs,fragment", [
    ({"count": 0}, "at least 1"),
    ({"count": 2, "ids": ["a", "a"]}, "unique"),
    ({"count": 2, "ids": ["a"]}, "unique"),
])
def test_plan_rejects_bad_counts_and_ids(planner: Set[int], tmp_path: Path, kwargs: dict,
                                         fragment: str) -> None:
    count = kwargs.pop("count")
    with pytest.raises(SdnmigError, match=fragment):
        instances.plan(count, ["learning"], tmp_path, **kwargs)


# -- Registry -------------------------------------------------------------------------------------

def _instances() -> dict:
    return {
        "c1": Instance(id="c1", of_port=6653, redis_port=16379, apps=[APPS["learning"]],
                       master_of="*", dir="/tmp/x/c1", controller_pid=1234, redis_pid=1235,
                       extra_conf={"role_timeout": "1.5"}),
        "c2": Instance(id="c2", of_port=6654, redis_port=16380, apps=[APPS["learning"]],
                       master_of="", platform="ryu", host="10.0.0.2", netns_pid=99,
                       dir="/tmp/x/c2"),
    }


def test_registry_without_a_file_is_empty(tmp_path: Path) -> None:
    assert Registry(tmp_path / "state").load() == {}


def test_registry_save_then_load_round_trips(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "new" / "state")
    reg.save(_instances())
    assert Registry(tmp_path / "new" / "state").load() == _instances()
    assert not (reg.state_dir / "instances.tmp").exists(), "written atomically via a temp file"
    reg.save({})
    assert reg.load() == {}


@pytest.mark.parametrize("content", [
    b"",                                   # truncated to nothing
    b'{"c1": {"id": "c1", "of_port"',      # truncated mid-way
    b'{"c1": {"id": "c1"}}',               # fields missing
    b'{"c1": {"id": "c1", "of_port": 1, "redis_port": 2, "apps": [], "master_of": "",'
    b' "colour": "red"}}',                 # unknown field
    b'{"c1": "not an object"}',
    b'{"c1": \xff}',                      # not UTF-8
])
def test_damaged_registry_is_an_sdnmig_error_naming_the_file(tmp_path: Path,
                                                             content: bytes) -> None:
    reg = Registry(tmp_path)
    reg.file.write_bytes(content)
    with pytest.raises(SdnmigError, match="is damaged") as info:
        reg.load()
    assert str(reg.file) in str(info.value)


@pytest.mark.parametrize("content", ["[]", "null", '"c1"', "42"])
def test_registry_of_the_wrong_json_shape_is_an_sdnmig_error(tmp_path: Path,
                                                             content: str) -> None:
    """BUG: valid JSON that is not an object makes load() call .items() on a list/None/str and
    crash with AttributeError (a traceback for the user) instead of the 'is damaged' message."""
    reg = Registry(tmp_path)
    reg.file.write_text(content)
    with pytest.raises(SdnmigError, match="is damaged"):
        reg.load()


def test_registry_file_is_plain_json_keyed_by_id(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.save(_instances())
    raw = json.loads(reg.file.read_text())
    assert sorted(raw) == ["c1", "c2"] and raw["c2"]["netns_pid"] == 99



def test_registry_written_before_the_bus_existed_still_loads(tmp_path: Path) -> None:
    """Old records lack the bus and advertiser fields: they load with the defaults."""
    old = {"c1": {"id": "c1", "of_port": 6653, "redis_port": 16379, "apps": [APPS["learning"]],
                  "master_of": "*", "platform": "os_ken", "host": "127.0.0.1", "netns_pid": None,
                  "dir": "/tmp/x/c1", "controller_pid": 12, "redis_pid": 13, "extra_conf": {}}}
    reg = Registry(tmp_path)
    reg.file.write_text(json.dumps(old))
    inst = reg.load()["c1"]
    assert (inst.bus_host, inst.bus_port, inst.bus_password_file) == ("", 0, "")
    assert inst.advertiser_pid is None and inst.discovery is True


# -- the bus: configuration -----------------------------------------------------------------------

def _one(tmp_path: Path, **kw: object) -> Instance:
    inst = Instance(id="c1", of_port=6653, redis_port=16379, apps=[APPS["learning"]],
                    master_of="*", dir=str(tmp_path / "c1"), **kw)
    inst.path.mkdir(parents=True, exist_ok=True)
    return inst


def _conf(inst: Instance) -> dict:
    lines = instances.write_conf(inst).read_text().splitlines()
    assert lines[:2] == ["[DEFAULT]", "[sdnmig]"]
    return dict(ln.split(" = ", 1) for ln in lines[2:])


def test_conf_names_the_bus_when_there_is_one(tmp_path: Path) -> None:
    bus = instances.Bus(host="10.254.0.254", port=26400, pid=1, dir=str(tmp_path / "bus"))
    inst = _one(tmp_path)
    instances.use_bus(inst, bus)
    conf = _conf(inst)
    assert conf["bus_host"] == "10.254.0.254" and conf["bus_port"] == "26400"
    assert conf["bus_password_file"] == str(tmp_path / "bus" / "bus.password")


def test_conf_without_a_bus_has_no_bus_lines(tmp_path: Path) -> None:
    assert not any(k.startswith("bus_") for k in _conf(_one(tmp_path)))


def test_extra_conf_still_overrides_the_bus(tmp_path: Path) -> None:
    """extra_conf comes last, so a test can point one instance at another bus."""
    inst = _one(tmp_path, bus_host="127.0.0.1", bus_port=26400, extra_conf={"bus_port": "1"})
    assert instances.write_conf(inst).read_text().splitlines()[-1] == "bus_port = 1"


def test_the_bus_directory_name_is_not_an_instance_id(planner: Set[int], tmp_path: Path) -> None:
    with pytest.raises(SdnmigError, match="'bus' is reserved"):
        instances.plan(2, ["learning"], tmp_path, ids=["c1", "bus"])


def test_bus_password_is_read_from_its_file(tmp_path: Path) -> None:
    bus = instances.Bus(host="127.0.0.1", port=1, pid=1, dir=str(tmp_path))
    (tmp_path / "bus.password").write_text("s3cret\n")
    assert bus.password_file == tmp_path / "bus.password" and bus.password == "s3cret"


@pytest.mark.parametrize("record", [None, "{not json", '{"host": "127.0.0.1"}',
                                    '{"host": "127.0.0.1", "port": 1, "pid": 1, "dir": "/x"}'])
def test_no_running_bus_is_none(tmp_path: Path, record: object) -> None:
    """No record, a damaged one, or one whose PID is not that bus's redis-server (PID 1)."""
    if record is not None:
        (tmp_path / "bus.json").write_text(str(record))
    assert instances.load_bus(tmp_path) is None


def test_start_all_hands_every_instance_the_bus(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    started = []
    monkeypatch.setattr(instances, "start_instance", started.append)
    bus = instances.Bus(host="127.0.0.1", port=26400, pid=1, dir=str(tmp_path / "bus"))
    insts = [_one(tmp_path), _one(tmp_path)]
    instances.start_all(insts, bus=bus)
    assert started == insts
    assert all((i.bus_host, i.bus_port) == ("127.0.0.1", 26400) for i in insts)
    assert all(i.bus_password_file == str(bus.password_file) for i in insts)


@pytest.fixture
def fake_stops(monkeypatch: pytest.MonkeyPatch) -> list:
    calls: list = []
    monkeypatch.setattr(instances, "stop_instance", lambda inst: calls.append(inst.id))
    monkeypatch.setattr(instances, "stop_bus", lambda state_dir: calls.append("bus"))
    return calls


def test_stop_all_stops_the_bus_with_the_last_instance(tmp_path: Path, fake_stops: list) -> None:
    reg = Registry(tmp_path)
    reg.save(_instances())
    instances.stop_all(reg, ["c2"])
    assert fake_stops == ["c2"], "c1 still uses the bus"
    instances.stop_all(reg)
    assert fake_stops == ["c2", "c1", "bus"]


def test_a_failed_start_stops_the_bus_if_no_instance_is_left(
        tmp_path: Path, fake_stops: list, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(inst: Instance) -> None:
        if inst.id == "c2":
            raise SdnmigError("c2 broke")

    monkeypatch.setattr(instances, "start_instance", fail)
    bus = instances.Bus(host="127.0.0.1", port=26400, pid=1, dir=str(tmp_path / "bus"))
    insts = [_one(tmp_path), _one(tmp_path)]
    insts[1].id = "c2"
    with pytest.raises(SdnmigError, match="c2 broke"):
        instances.start_all(insts, Registry(tmp_path), bus)
    assert fake_stops == ["c1", "bus"]


# -- the bus: a real redis-server (no root needed) ------------------------------------------------

@pytest.fixture
def bus_dir(tmp_path: Path) -> Iterator[Path]:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    yield tmp_path
    instances.stop_bus(tmp_path)


def test_ensure_bus_starts_one_bus_and_then_returns_it(bus_dir: Path) -> None:
    start = 26379 + os.getpid() % 5000
    bus = instances.ensure_bus(bus_dir, port_start=start)
    assert bus.port >= start and bus.client().ping()
    assert instances.ensure_bus(bus_dir, port_start=start) == bus
    assert instances.load_bus(bus_dir) == bus
    assert json.loads((bus_dir / "bus.json").read_text()) == {
        "host": "127.0.0.1", "port": bus.port, "pid": bus.pid, "dir": str(bus_dir / "bus")}
    assert (bus.password_file.stat().st_mode & 0o777) == 0o600
    assert bus.client().config_get("appendonly") == {"appendonly": "no"}
    assert bus.client().config_get("save") == {"save": ""}
    instances.stop_bus(bus_dir)
    assert instances.load_bus(bus_dir) is None and not (bus_dir / "bus.json").exists()
    assert not instances.alive(bus.pid, str(bus.conf))


def test_the_bus_refuses_a_wrong_password(bus_dir: Path) -> None:
    import redis

    bus = instances.ensure_bus(bus_dir, port_start=26379 + os.getpid() % 5000)
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(host=bus.host, port=bus.port, password="wrong", socket_timeout=5).ping()
