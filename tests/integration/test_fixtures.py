"""The integration fixtures clean up after a failing test too (they are what keeps the machine clean)."""
from __future__ import annotations

from tests.integration.conftest import _interrupt_waiting_hosts
from topologies.testbeds import LinearTopo

from sdnmig.lab import unique_prefix


def test_a_host_left_waiting_on_a_command_does_not_block_the_network_stop(controllers, mininet):
    """A test that fails between sendCmd and waitOutput (e.g. a ping load) used to make
    Mininet's stop() assert before any bridge was deleted: the bridges leaked."""
    (c1,) = controllers.start(1)
    topo = LinearTopo(k=2, prefix=unique_prefix())
    net = mininet(topo, [c1])
    h1 = net.get(topo.prefix + "h1")
    h1.sendCmd("sleep 60")
    assert h1.waiting
    _interrupt_waiting_hosts(net)
    assert not h1.waiting
    assert h1.cmd("echo ok").strip() == "ok", "the host's shell is usable again"
