"""`hypervisor.manage` and `hypervisor.state`: the hypervisor's management, with the machine faked.

No OVS, no processes: `World` stands for ovs-vsctl, the spawned processes and their control
sockets, so these tests ask what the management records, which commands it would run, and what
it answers (on the command line and over HTTP, with a real server on a free loopback port).
"""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest

from hypervisor import manage
from hypervisor import state as hs
from hypervisor.manage import Deps, Manager, Unreachable
from hypervisor.state import InstanceRec, ProxyRec, State, SwitchRec
from sdnmig.errors import SdnmigError

SLICES = [{"tenant": "t1", "ports": {"1": [1, 2]}}, {"tenant": "t2", "ports": {"0x1": [3, 4]}}]
CONTROLLERS = {"t1": "127.0.0.1:6653", "t2": "127.0.0.1:6654"}
TOKEN = "hv-test-token"


class FakeProc:
    def __init__(self, pid: int) -> None:
        self.pid, self.returncode = pid, None

    def poll(self) -> Optional[int]:
        return self.returncode


class World:
    """What the management touches: bridges (through vsctl), processes, control sockets."""

    def __init__(self) -> None:
        self.fail_mode = {"br1": "secure", "br2": "standalone"}
        self.dpids = {"br1": 1, "br2": 2}
        self.controllers: Dict[str, str] = {}
        self.vsctl_calls: List[Tuple[str, ...]] = []
        self.cmds: Dict[int, str] = {}          # pid -> command line
        self.dead: Set[int] = set()
        self.asked: List[Tuple[str, Dict[str, Any]]] = []
        self.take_over: Callable[[Dict[str, Any]], Dict[str, Any]] = lambda req: {
            "switch": req["switch"], "seconds": 0.1,
            "tenants": {t: "active" for t in req.get("tenants", ["t1", "t2"])}}
        self.busy_ports: Set[int] = set()
        self.adverts: List[Dict[str, str]] = []

    def deps(self) -> Deps:
        return Deps(vsctl=self.vsctl, bridge_dpids=lambda: dict(self.dpids), spawn=self.spawn,
                    ask=self.ask, alive=self.alive, terminate=self.terminate,
                    port_free=lambda port: port not in self.busy_ports,
                    browse=lambda scope, window, expect: [dict(a) for a in self.adverts],
                    dpid_wait_s=0)

    def vsctl(self, *args: str) -> str:
        self.vsctl_calls.append(args)
        if args[0] in ("get-fail-mode", "get-controller", "set-controller") \
                and args[1] not in self.dpids:
            raise SdnmigError(f"ovs-vsctl {' '.join(args)}: no bridge named {args[1]}")
        if args[0] == "get-fail-mode":
            return self.fail_mode[args[1]] + "\n"
        if args[0] == "get-controller":
            return self.controllers.get(args[1], "")
        return ""

    def set_controller_calls(self) -> List[Tuple[str, ...]]:
        return [c for c in self.vsctl_calls if c[0] == "set-controller"]

    def spawn(self, cmd: List[str], log: Path) -> FakeProc:
        pid = 1000 + len(self.cmds)
        self.cmds[pid] = " ".join(cmd)
        return FakeProc(pid)

    def alive(self, pid: Optional[int], marker: str) -> bool:
        return pid in self.cmds and marker in self.cmds[pid] and pid not in self.dead

    def terminate(self, pid: Optional[int], marker: str, timeout: float = 5.0) -> None:
        if pid is not None:
            self.dead.add(pid)

    def _serving(self, sock: Path) -> Optional[int]:
        for pid, cmd in self.cmds.items():
            if f"--control {sock}" in cmd and pid not in self.dead:
                return pid
        return None

    def ask(self, sock: Path, request: Dict[str, Any], timeout: float) -> Dict[str, Any]:
        self.asked.append((Path(sock).name, request))
        pid = self._serving(Path(sock))
        if pid is None:
            raise Unreachable(f"{sock}: Connection refused")
        if request["op"] == "stop":
            self.dead.add(pid)
            return {"stopping": Path(sock).stem}
        if request["op"] == "take_over":
            return self.take_over(request)
        return {"pid": pid, "tenancies": [], "switches": {}, "errors": []}


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture
def mgr(tmp_path: Path, world: World) -> Manager:
    return Manager(tmp_path / "hv", world.deps())


def deploy(mgr: Manager) -> Manager:
    """Slices, a proxy, br1 on passive 6634, hv1 and hv2, br1 served by hv1."""
    mgr.configure(SLICES, CONTROLLERS)
    mgr.proxy_start("127.0.0.1:16700")
    mgr.switch_add("br1", 6634)
    mgr.start("hv1", 16653)
    mgr.start("hv2", 16654)
    mgr.assign("br1", "hv1")
    return mgr


# -- the state file -------------------------------------------------------------------------------

def full_state() -> State:
    return State(proxy=ProxyRec("127.0.0.1:16700", 42), slices=SLICES, controllers=CONTROLLERS,
                 deadline_s=2.5,
                 switches={"br1": SwitchRec(0xABC, "127.0.0.1:6634", "hv1",
                                            {"t1": "hv1", "t2": "hv2"})},
                 instances={"hv1": InstanceRec(16653, 43), "hv2": InstanceRec(16654, None)})


def test_state_round_trips_through_its_file(tmp_path: Path) -> None:
    hs.save(tmp_path, full_state())
    assert hs.load(tmp_path) == full_state()
    raw = json.loads((tmp_path / hs.STATE_FILE).read_text())
    assert raw["version"] == 1 and raw["switches"]["br1"]["dpid"] == "0xabc"


def test_no_state_file_is_an_empty_state(tmp_path: Path) -> None:
    assert hs.load(tmp_path) == State()


def test_the_state_file_is_private_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    hs.save(tmp_path, full_state())
    assert stat.S_IMODE((tmp_path / hs.STATE_FILE).stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [hs.STATE_FILE]


def test_a_failed_write_leaves_the_old_state_whole(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    hs.save(tmp_path, full_state())

    def crash(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(hs.os, "replace", crash)
    with pytest.raises(OSError):
        hs.save(tmp_path, State())
    assert hs.load(tmp_path) == full_state()
    assert [p.name for p in tmp_path.iterdir()] == [hs.STATE_FILE]


@pytest.mark.parametrize("text", ["{", "[]", '{"version": 2}',
                                  '{"switches": {"br1": {"passive": "x"}}}'])
def test_a_damaged_state_file_is_an_operator_error(tmp_path: Path, text: str) -> None:
    (tmp_path / hs.STATE_FILE).write_text(text)
    with pytest.raises(SdnmigError, match="state.json"):
        hs.load(tmp_path)


def test_the_state_survives_a_new_manager(tmp_path: Path, world: World) -> None:
    deploy(Manager(tmp_path / "hv", world.deps()))
    again = Manager(tmp_path / "hv", world.deps()).read()
    assert again.switches["br1"].served_by == "hv1"
    assert set(again.instances) == {"hv1", "hv2"} and again.proxy is not None


# -- configuration --------------------------------------------------------------------------------

def test_the_instance_configuration_is_what_an_instance_loads(tmp_path: Path) -> None:
    from hypervisor.instance import Config

    cfg = hs.instance_config(full_state(), "hv1", 16653)
    path = tmp_path / "hv1.json"
    path.write_text(json.dumps(cfg))
    loaded = Config.load(path)
    assert (loaded.name, loaded.listen_host, loaded.listen_port) == ("hv1", "127.0.0.1", 16653)
    assert (loaded.proxy_host, loaded.proxy_port) == ("127.0.0.1", 16700)
    assert loaded.slices == SLICES and loaded.controllers == CONTROLLERS
    assert loaded.deadline_s == 2.5


def test_an_instance_needs_a_proxy_and_slices() -> None:
    with pytest.raises(SdnmigError, match="proxy-start"):
        hs.instance_config(State(slices=SLICES), "hv1", 16653)
    with pytest.raises(SdnmigError, match="configure"):
        hs.instance_config(State(proxy=ProxyRec("127.0.0.1:16700")), "hv1", 16653)


def test_start_writes_the_configuration_and_spawns_the_instance(mgr: Manager,
                                                                world: World) -> None:
    mgr.configure(SLICES, CONTROLLERS)
    mgr.proxy_start("127.0.0.1:16700")
    out = mgr.start("hv1", 16653)
    root = mgr.root
    cmd = world.cmds[out["pid"]]
    assert " -m hypervisor " in cmd
    assert f"--config {root / 'hv1.json'} --control {root / 'hv1.sock'} --scope {root}" in cmd
    cfg = json.loads((root / "hv1.json").read_text())
    assert cfg["proxy"] == {"host": "127.0.0.1", "port": 16700}
    assert cfg["listen"] == {"host": "127.0.0.1", "port": 16653}
    assert mgr.read().instances["hv1"] == InstanceRec(16653, out["pid"])
    assert ("hv1.sock", {"op": "status"}) in world.asked   # it waited for the control socket


def test_the_proxy_is_spawned_with_its_control_socket(mgr: Manager, world: World) -> None:
    out = mgr.proxy_start("127.0.0.1:16700")
    cmd = world.cmds[out["pid"]]
    assert f" -m proxy --listen 127.0.0.1:16700 --control {mgr.root / 'proxy.sock'}" in cmd
    assert mgr.proxy_stop() == {"proxy": "127.0.0.1:16700", "stopped": True}
    assert mgr.read().proxy == ProxyRec("127.0.0.1:16700", None)


def test_an_instance_that_exits_at_start_is_an_error(mgr: Manager, world: World) -> None:
    mgr.configure(SLICES, CONTROLLERS)
    mgr.proxy_start("127.0.0.1:16700")

    def dying(cmd: List[str], log: Path) -> FakeProc:
        log.write_text("hypervisor: slices[0]: bad\n")
        proc = FakeProc(999)
        proc.returncode = 2
        return proc

    mgr.deps.spawn = dying
    with pytest.raises(SdnmigError, match="exited at start: hypervisor: slices"):
        mgr.start("hv1", 16653)
    assert "hv1" not in mgr.read().instances


def test_stop_asks_first_then_terminates_by_pid(mgr: Manager, world: World) -> None:
    deploy(mgr)
    pid = mgr.read().instances["hv1"].pid
    out = mgr.stop("hv1")
    assert out == {"name": "hv1", "stopped": True, "serves": ["br1"]}
    assert ("hv1.sock", {"op": "stop"}) in world.asked and pid in world.dead
    assert mgr.read().instances["hv1"].pid is None
    assert mgr.stop("hv1")["stopped"] is False


def test_configure_keeps_the_switches_tenants_in_step(mgr: Manager) -> None:
    deploy(mgr)
    mgr.configure(SLICES[:1], {"t1": CONTROLLERS["t1"]})
    assert mgr.read().switches["br1"].tenants == {"t1": "hv1"}


# -- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 33, "../x", 7, "state", "proxy"])
def test_bad_instance_names(name: Any) -> None:
    with pytest.raises(SdnmigError, match="instance name"):
        hs.check_name(name)


@pytest.mark.parametrize("port", [0, 65536, "80", True, None, 1.5])
def test_bad_ports(port: Any) -> None:
    with pytest.raises(SdnmigError, match="a TCP port"):
        hs.check_port(port, "listen port")


@pytest.mark.parametrize("words, match", [
    (["t1"], "TENANT=HOST:PORT"), (["=1.2.3.4:5"], "TENANT=HOST:PORT"),
    (["t1=nohost"], "HOST:PORT"), (["t1=h:99999"], "HOST:PORT"),
    (["t1=h:1", "t1=h:2"], "twice")])
def test_bad_controller_words(words: List[str], match: str) -> None:
    with pytest.raises(SdnmigError, match=match):
        hs.parse_controllers(words)


@pytest.mark.parametrize("slices, controllers, match", [
    ({"x": 1}, {}, "JSON list"),
    (SLICES, {"t1": "127.0.0.1:6653"}, "no controller for tenant.*t2"),
    (SLICES, dict(CONTROLLERS, t9="127.0.0.1:1"), "unknown tenant.*t9"),
    ([{"tenant": "t1", "ports": {"1": [1]}, "color": 3}], CONTROLLERS, "slices: .*color"),
    ([{"tenant": "t1", "ports": {"1": [1]}}, {"tenant": "t1", "ports": {"2": [1]}}],
     {"t1": "127.0.0.1:1"}, "slices: ")])
def test_bad_deployments(slices: Any, controllers: Dict[str, str], match: str) -> None:
    with pytest.raises(SdnmigError, match=match):
        hs.check_deployment(slices, controllers)


def test_slices_may_come_wrapped_in_an_object() -> None:
    assert hs.check_deployment({"slices": SLICES}, CONTROLLERS) == SLICES


def test_tenants_on_a_switch_read_decimal_and_hex_keys() -> None:
    assert hs.tenants_on(SLICES, 1) == ["t1", "t2"]
    assert hs.tenants_on(SLICES, 2) == []


@pytest.mark.parametrize("call, match", [
    (lambda m: m.assign("br9", "hv1"), "unknown switch 'br9'"),
    (lambda m: m.assign("br1", "hv9"), "unknown instance 'hv9'"),
    (lambda m: m.start("hv1", 16699), "duplicate name: instance hv1"),
    (lambda m: m.start("hv3", 16653), "port 16653 is taken: instance hv1"),
    (lambda m: m.start("hv3", 16700), "port 16700 is taken: the proxy"),
    (lambda m: m.start("hv3", 6634), "port 6634 is taken: the passive port of br1"),
    (lambda m: m.start("hv3"), "listen port is required"),
    (lambda m: m.switch_add("br1", 6635), "already recorded"),
    (lambda m: m.switch_add("br2", 6635), "fail_mode standalone.*set-fail-mode br2 secure"),
    (lambda m: m.switch_add("br9", 6635), "no bridge named br9"),
    (lambda m: m.switch_add("br3", 16653), "port 16653 is taken"),
    (lambda m: m.migrate("br1", "hv2", tenants=["t7"]), "t7 have no port on br1"),
    (lambda m: m.migrate("br1", "hv2", tenants="t1"), "list of tenant names"),
    (lambda m: m.migrate("br1", "hv2", timeout=-1), "timeout -1"),
    (lambda m: m.migrate("br1", "hv1"), "hv1 already serves t1, t2"),
    (lambda m: m.proxy_start("127.0.0.1:16701"), "already running"),
    (lambda m: m.proxy_start("nowhere"), "HOST:PORT"),
    (lambda m: m.configure(SLICES, ["t1=127.0.0.1:1"]), "controllers: an object"),
])
def test_operator_errors(mgr: Manager, world: World, call: Callable[[Manager], Any],
                         match: str) -> None:
    deploy(mgr)
    before = (mgr.root / hs.STATE_FILE).read_text()
    calls = len(world.vsctl_calls)
    with pytest.raises(SdnmigError, match=match):
        call(mgr)
    assert (mgr.root / hs.STATE_FILE).read_text() == before
    assert all(c[0] != "set-controller" for c in world.vsctl_calls[calls:])


def test_a_port_another_process_holds_is_refused(mgr: Manager, world: World) -> None:
    mgr.configure(SLICES, CONTROLLERS)
    mgr.proxy_start("127.0.0.1:16700")
    world.busy_ports.add(16653)
    with pytest.raises(SdnmigError, match="16653 is taken by another process"):
        mgr.start("hv1", 16653)


def test_assign_and_migrate_need_a_running_instance(mgr: Manager, world: World) -> None:
    deploy(mgr)
    mgr.stop("hv2")
    with pytest.raises(SdnmigError, match="hv2 is not running"):
        mgr.migrate("br1", "hv2")
    with pytest.raises(SdnmigError, match="hv2 is not running"):
        mgr.assign("br1", "hv2")


def test_migrate_needs_an_assigned_switch(mgr: Manager, world: World) -> None:
    deploy(mgr)
    world.dpids["br3"], world.fail_mode["br3"] = 3, "secure"
    mgr.switch_add("br3", 6635)
    with pytest.raises(SdnmigError, match="assign it first"):
        mgr.migrate("br3", "hv2")


def test_a_switch_already_listening_on_its_passive_port_may_be_added(mgr: Manager,
                                                                     world: World) -> None:
    world.busy_ports.add(6634)
    world.controllers["br1"] = "tcp:127.0.0.1:6653\nptcp:6634:127.0.0.1\n"
    assert mgr.switch_add("br1", 6634)["passive"] == "127.0.0.1:6634"


# -- what is said to Open vSwitch -----------------------------------------------------------------

def test_the_set_controller_command_keeps_the_passive_port() -> None:
    assert hs.set_controller_args("br1", 16653, "127.0.0.1:6634") == [
        "set-controller", "br1", "tcp:127.0.0.1:16653", "ptcp:6634:127.0.0.1"]


def test_assign_is_one_set_controller_call(mgr: Manager, world: World) -> None:
    deploy(mgr)
    assert world.set_controller_calls() == [
        ("set-controller", "br1", "tcp:127.0.0.1:16653", "ptcp:6634:127.0.0.1")]
    sw = mgr.read().switches["br1"]
    assert (sw.served_by, sw.tenants) == ("hv1", {"t1": "hv1", "t2": "hv1"})


def test_a_switch_may_be_named_by_its_dpid(mgr: Manager, world: World) -> None:
    deploy(mgr)
    assert mgr.assign("0x1", "hv1")["switch"] == "br1"


def test_migrate_takes_over_then_names_the_target_in_one_call(mgr: Manager,
                                                              world: World) -> None:
    deploy(mgr)
    world.vsctl_calls.clear()
    out = mgr.migrate("br1", "hv2", timeout=10)
    assert ("hv2.sock", {"op": "take_over", "switch": "0x1", "passive": "127.0.0.1:6634",
                         "timeout": 10}) in world.asked
    assert world.vsctl_calls == [
        ("set-controller", "br1", "tcp:127.0.0.1:16654", "ptcp:6634:127.0.0.1")]
    assert out["set_controller"] is True and out["tenants"] == {"t1": "active", "t2": "active"}
    sw = mgr.read().switches["br1"]
    assert (sw.served_by, sw.tenants) == ("hv2", {"t1": "hv2", "t2": "hv2"})


@pytest.mark.parametrize("outcome", ["timeout", "failed", "aborted"])
def test_migrate_leaves_the_configuration_alone_when_a_tenant_did_not_end_active(
        mgr: Manager, world: World, outcome: str) -> None:
    deploy(mgr)
    world.vsctl_calls.clear()
    world.take_over = lambda req: {"switch": "0x1", "seconds": 5.0,
                                   "tenants": {"t1": "active", "t2": outcome}}
    out = mgr.migrate("br1", "hv2")
    assert world.vsctl_calls == []
    assert out["set_controller"] is False and out["served_by"] == "hv1"
    assert "t2 did not end active" in out["note"]
    sw = mgr.read().switches["br1"]
    assert (sw.served_by, sw.tenants) == ("hv1", {"t1": "hv2", "t2": "hv1"})


def test_migrating_some_tenants_renames_the_bridge_only_when_none_is_left(
        mgr: Manager, world: World) -> None:
    deploy(mgr)
    world.vsctl_calls.clear()
    first = mgr.migrate("br1", "hv2", tenants=["t1"])
    assert first["set_controller"] is False and "t2 still served" in first["note"]
    assert world.vsctl_calls == []
    second = mgr.migrate("br1", "hv2", tenants=["t2"])
    assert second["set_controller"] is True
    assert world.vsctl_calls == [
        ("set-controller", "br1", "tcp:127.0.0.1:16654", "ptcp:6634:127.0.0.1")]


def test_a_refused_take_over_changes_nothing(mgr: Manager, world: World) -> None:
    deploy(mgr)
    world.vsctl_calls.clear()
    world.take_over = lambda req: {"error": "no slice of this instance has a port on switch 0x1"}
    before = (mgr.root / hs.STATE_FILE).read_text()
    with pytest.raises(SdnmigError, match="hv2: no slice"):
        mgr.migrate("br1", "hv2")
    assert world.vsctl_calls == [] and (mgr.root / hs.STATE_FILE).read_text() == before


# -- status and discovery -------------------------------------------------------------------------

def test_status_reads_who_serves_what_from_the_proxy_else_the_state(mgr: Manager,
                                                                    world: World) -> None:
    deploy(mgr)
    rows = mgr.status()["serving"]
    assert [(r["switch"], r["tenant"], r["served_by"], r["source"]) for r in rows] == [
        ("br1", "t1", "hv1", "state"), ("br1", "t2", "hv1", "state")]
    proxy_pid = mgr.read().proxy.pid
    answer = {"tenancies": [{"switch": "0x1", "tenant": "t1", "served_by": "hv1",
                             "taking_over": "hv2", "route": "draining"}]}
    rows = hs.serving_table(mgr.read(), answer)
    assert rows[0] == {"switch": "br1", "dpid": "0x1", "tenant": "t1", "served_by": "hv1",
                       "taking_over": "hv2", "route": "draining", "source": "proxy"}
    assert rows[1]["source"] == "state" and rows[1]["tenant"] == "t2"
    mgr.stop("hv2")
    out = mgr.status()
    assert out["proxy"]["alive"] and out["proxy"]["status"]["pid"] == proxy_pid
    assert out["instances"]["hv1"]["alive"] and "status" in out["instances"]["hv1"]
    assert not out["instances"]["hv2"]["alive"] and "status" not in out["instances"]["hv2"]


def test_discover_marks_adverts_of_running_instances(mgr: Manager, world: World) -> None:
    deploy(mgr)
    pid = mgr.read().instances["hv1"].pid
    world.adverts = [{"name": "hv1", "pid": str(pid), "scope": str(mgr.root)},
                     {"name": "hv2", "pid": "1", "scope": str(mgr.root)}]
    out = mgr.discover(0.5)
    assert out["scope"] == str(mgr.root)
    assert [(a["name"], a["alive"]) for a in out["adverts"]] == [("hv1", True), ("hv2", False)]
    with pytest.raises(SdnmigError, match="timeout"):
        mgr.discover(0)


# -- the control-socket client --------------------------------------------------------------------

@pytest.fixture
def short_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hvm", dir="/tmp"))
    yield path
    shutil.rmtree(path)


def test_ask_sends_one_line_and_reads_one_answer(short_dir: Path) -> None:
    sock_path = short_dir / "x.sock"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(sock_path))
    srv.listen(1)
    got: List[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            got.append(conn.makefile("rb").readline())
            conn.sendall(b'{"pid": 7}\n')

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        assert manage.ask(sock_path, {"op": "status"}, 5) == {"pid": 7}
    finally:
        thread.join(5)
        srv.close()
    assert json.loads(got[0]) == {"op": "status"}
    with pytest.raises(Unreachable):
        manage.ask(short_dir / "none.sock", {"op": "status"}, 1)


def test_a_state_dir_too_long_for_a_socket_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SdnmigError, match="shorter --state"):
        Manager(tmp_path / ("d" * 120)).control("hv1")


# -- the command line -----------------------------------------------------------------------------

def test_cli_errors_are_one_line_with_status_2(tmp_path: Path, world: World,
                                               capsys: pytest.CaptureFixture) -> None:
    code = manage.main(["assign", "--switch", "br1", "--to", "hv1",
                        "--state", str(tmp_path)], world.deps())
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown switch 'br1'" in err


def test_cli_configure_then_migrate(tmp_path: Path, world: World,
                                    capsys: pytest.CaptureFixture) -> None:
    state = ["--state", str(tmp_path / "hv")]
    slices = tmp_path / "slices.json"
    slices.write_text(json.dumps(SLICES))
    ctl = [f"{t}={a}" for t, a in CONTROLLERS.items()]
    assert manage.main(state + ["configure", "--slices", str(slices), "--controllers"] + ctl,
                       world.deps()) == 0
    for argv in (["proxy-start", "--listen", "127.0.0.1:16700"],
                 ["switch-add", "--bridge", "br1", "--passive-port", "6634"],
                 ["start", "hv1", "--listen-port", "16653"],
                 ["start", "hv2", "--listen-port", "16654"],
                 ["assign", "--switch", "br1", "--to", "hv1"]):
        assert manage.main(state + argv, world.deps()) == 0, capsys.readouterr().err
    capsys.readouterr()
    world.take_over = lambda req: {"switch": "0x1", "seconds": 5.0, "tenants": {"t1": "timeout"}}
    assert manage.main(state + ["migrate", "--switch", "br1", "--to", "hv2", "--tenants", "t1"],
                       world.deps()) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["set_controller"] is False and out["tenants"] == {"t1": "timeout"}
    assert manage.main(state + ["status"], world.deps()) == 0
    assert "br1" in capsys.readouterr().out


# -- HTTP -----------------------------------------------------------------------------------------

class Api:
    def __init__(self, mgr: Manager) -> None:
        self.server = manage.make_server(mgr, TOKEN, port=0)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,),
                                       daemon=True)
        self.thread.start()

    def call(self, method: str, path: str, body: Any = None,
             token: Optional[str] = TOKEN) -> Tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body).encode(),
                         headers=headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def http_api(mgr: Manager) -> Iterator[Api]:
    deploy(mgr)
    api_ = Api(mgr)
    yield api_
    api_.close()


@pytest.mark.parametrize("token", [None, "wrong", ""])
def test_http_needs_the_token(http_api: Api, token: Optional[str]) -> None:
    status, body = http_api.call("GET", "/status", token=token)
    assert status == 401 and "token" in body["error"]


@pytest.mark.parametrize("method, path", [("GET", "/nope"), ("GET", "/instances/"),
                                          ("POST", "/status/x")])
def test_http_unknown_paths_are_404(http_api: Api, method: str, path: str) -> None:
    status, body = http_api.call(method, path, {} if method == "POST" else None)
    assert status == 404 and "no such path" in body["error"]


def test_http_wrong_method_is_405(http_api: Api) -> None:
    assert http_api.call("POST", "/status", {})[0] == 405
    assert http_api.call("GET", "/instances/hv1")[0] == 405


@pytest.mark.parametrize("method, path, body, match", [
    ("POST", "/instances", {"listen_port": 16655}, "missing field.*name"),
    ("POST", "/instances", {"name": "hv3", "listen_port": 16655, "x": 1}, "unknown field.*x"),
    ("POST", "/instances", {"name": "hv1", "listen_port": 16655}, "duplicate name"),
    ("POST", "/instances", {"name": "hv3", "listen_port": 16653}, "16653 is taken"),
    ("POST", "/instances", {"name": "hv3", "listen_port": "16655"}, "a TCP port"),
    ("DELETE", "/instances/hv9", None, "unknown instance 'hv9'"),
    ("POST", "/assign", {"switch": "br9", "to": "hv1"}, "unknown switch 'br9'"),
    ("POST", "/assign", {"switch": "br1", "to": "hv9"}, "unknown instance 'hv9'"),
    ("POST", "/migrate", {"switch": "br1"}, "missing field.*to"),
    ("POST", "/migrate", {"switch": "br1", "to": "hv2", "commit": 1}, "unknown field.*commit"),
    ("POST", "/switches", {"bridge": "br1", "passive_port": 6640}, "already recorded"),
    ("POST", "/proxy", {}, "missing field.*listen"),
    ("POST", "/configure", {"slices": SLICES, "controllers": {}}, "no controller"),
    ("GET", "/discover?timeout=x", None, "timeout 'x'"),
])
def test_http_bad_input_is_400(http_api: Api, method: str, path: str, body: Any,
                               match: str) -> None:
    status, answer = http_api.call(method, path, body)
    assert status == 400, answer
    assert set(answer) == {"error"}
    assert re.search(match, answer["error"]), answer


def test_http_operations_arrive(http_api: Api, world: World, mgr: Manager) -> None:
    status, body = http_api.call("GET", "/status")
    assert status == 200 and body["switches"]["br1"]["served_by"] == "hv1"
    world.vsctl_calls.clear()
    status, body = http_api.call("POST", "/migrate", {"switch": "br1", "to": "hv2",
                                                      "tenants": ["t1", "t2"]})
    assert status == 200 and body["set_controller"] is True
    assert world.set_controller_calls() == [
        ("set-controller", "br1", "tcp:127.0.0.1:16654", "ptcp:6634:127.0.0.1")]
    status, body = http_api.call("DELETE", "/instances/hv1")
    assert status == 200 and body["stopped"] is True
    status, body = http_api.call("POST", "/instances", {"name": "hv1"})
    assert status == 200 and body["listen"] == "127.0.0.1:16653"
    status, body = http_api.call("DELETE", "/proxy")
    assert status == 200 and body["stopped"] is True


def test_http_refuses_other_than_loopback(mgr: Manager) -> None:
    with pytest.raises(SdnmigError, match="loopback"):
        manage.make_server(mgr, TOKEN, host="0.0.0.0", port=0)
    with pytest.raises(SdnmigError, match="empty"):
        manage.make_server(mgr, "", port=0)


def test_the_token_file_is_made_private(tmp_path: Path) -> None:
    from sdnmig.api import load_token

    path = tmp_path / "hv" / "api.token"
    assert load_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o644)
    with pytest.raises(SdnmigError, match="chmod 600"):
        load_token(path)
