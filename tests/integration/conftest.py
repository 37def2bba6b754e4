"""Fixtures for tests on real Open vSwitch, Mininet, Redis and controller processes (root only)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import pytest

from sdnmig import instances

from sdnmig.lab import Controllers, build_net, dump_flows

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: List[Any]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: Any, call: Any) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def _failed(request: Any) -> bool:
    rep = getattr(request.node, "rep_call", None)
    return bool(rep and rep.failed)


@pytest.fixture(scope="session", autouse=True)
def _root_and_ovs() -> None:
    if os.geteuid() != 0:
        why = "integration tests need root (Open vSwitch, Mininet): run 'sudo make test'"
        if os.environ.get("SDNMIG_REQUIRE_INTEGRATION"):
            pytest.fail(why)  # `make test` must not pass with them skipped
        pytest.skip(why)
    if subprocess.run(["ovs-vsctl", "--timeout=5", "show"], capture_output=True).returncode:
        pytest.fail("Open vSwitch is not running: run 'sudo make install'")


@pytest.fixture
def controllers(request: Any, tmp_path: Path) -> Iterator[Controllers]:
    """Start controller instances; stopped at teardown, which fails on any logged exception."""
    ctl = Controllers(tmp_path / "instances")
    yield ctl
    if _failed(request):
        print("\n=== controller logs ===\n" + ctl.dump_logs())
    problems = ctl.close()
    assert not problems, "a controller logged an exception:\n" + "\n".join(problems)


@pytest.fixture
def ryu_platform() -> str:
    if not (instances.RYU_VENV / "bin" / "ryu-manager").exists():
        # A user without Python 3.9 gets a skip with the reason; CI must cover real Ryu.
        why = "real Ryu is not installed (.venv-ryu): run 'sudo make ryu-env' (needs Python 3.9)"
        (pytest.fail if os.environ.get("CI") else pytest.skip)(why)
    return "ryu"


@pytest.fixture
def mininet(request: Any) -> Iterator[Callable[..., Any]]:
    """Factory: `mininet(topo, controller_instances, **switch_opts)` -> started network."""
    nets = []

    def make(topo: Any, insts: Any, **opts: Any) -> Any:
        net = build_net(topo, insts, **opts)
        nets.append(net)
        return net

    yield make
    errors = []
    for net in reversed(nets):
        try:  # one net failing to stop must not leave the others running
            if _failed(request):
                print("\n=== flows ===\n" + dump_flows(net))
            _interrupt_waiting_hosts(net)
            net.stop()
        except Exception as e:  # noqa: BLE001 -- reported below, after every net was tried
            errors.append(e)
            for sw in net.switches:  # at least our bridges go (never every bridge: mn -c)
                subprocess.run(["ovs-vsctl", "--if-exists", "del-br", sw.name], check=False)
    assert not errors, f"could not stop a network: {errors}"


def _interrupt_waiting_hosts(net: Any) -> None:
    """A test that failed between a host's sendCmd and its waitOutput (a ping load) leaves the
    host waiting, and Mininet's stop() then asserts before deleting any bridge."""
    for h in net.hosts:
        if getattr(h, "waiting", False):
            h.sendInt()
            h.waitOutput()


@pytest.fixture
def namespaced(controllers: Controllers, mininet: Callable[..., Any]) -> Callable[..., Any]:
    """Factory: `namespaced(topo, n, **start_opts)` -> (network, instances): n instances started
    in the namespaces of `topo.controller_nodes()`, before the switches look for them."""

    def make(topo: Any, n: int, **opts: Any) -> Tuple[Any, List[Any]]:
        started: List[Any] = []

        def start(net: Any) -> List[Any]:
            nodes = topo.controller_nodes()
            started.extend(controllers.start(n, hosts=[addr for _, addr in nodes],
                                             netns_pids=[net.get(name).pid for name, _ in nodes],
                                             **opts))
            return started

        return mininet(topo, [], before_start=start), started

    return make
