"""The integration fixtures clean up after a failing test too (they are what keeps the machine clean)."""
from __future__ import annotations

from tests.integration.conftest import _interrupt_waiting_hosts
from topologies.testbeds import LinearTopo

from sdnmig.lab import poll, unique_prefix


def _children(pid: int) -> list:
    """The command names of a process's children."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        kids = f.read().split()
    names = []
    for kid in kids:
        try:
            with open(f"/proc/{kid}/comm") as f:
                names.append(f.read().strip())
        except FileNotFoundError:
            pass
    return names


def test_a_host_left_waiting_on_a_command_does_not_block_the_network_stop(controllers, mininet):
    """A test that fails between sendCmd and waitOutput (e.g. a ping load) used to make
    Mininet's stop() assert before any bridge was deleted: the bridges leaked."""
    (c1,) = controllers.start(1)
    topo = LinearTopo(k=2, prefix=unique_prefix())
    net = mininet(topo, [c1])
    h1 = net.get(topo.prefix + "h1")
    h1.sendCmd("sleep 60")
    assert h1.waiting
    # Interrupt the command, not the shell still reading its line (a CI run saw "leep: command
    # not found" when ^C came first): as in the real case, the command is running.
    poll(lambda: "sleep" in _children(h1.pid), 5, "sleep running in h1's shell")
    _interrupt_waiting_hosts(net)
    assert not h1.waiting
    assert h1.cmd("echo ok").strip() == "ok", "the host's shell is usable again"
