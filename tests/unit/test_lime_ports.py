"""A logical port's state (lime_shim.app, PORT_STATUS): decided in the shim's event loop, so a
decision taken for an operation is not overtaken by a PORT_STATUS already queued there."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, List

from lime_shim.mapping import Instance, Local
from tests.unit.test_lime_direct import OFP, Bridge, shim_with


def port_status(dp: Bridge, port: int, up: bool) -> Any:
    desc = SimpleNamespace(port_no=port, config=0, state=0 if up else OFP.OFPPS_LINK_DOWN)
    return SimpleNamespace(msg=SimpleNamespace(datapath=dp, reason=OFP.OFPPR_MODIFY, desc=desc))


def states(got: List[Any]) -> List[bool]:
    return [not getattr(m.msg.desc, "state", 0) & OFP.OFPPS_LINK_DOWN for m in got]


def two_instances() -> tuple:
    """Logical switch 1 on bridges 1 and 2, its port 1 local on both (a host being moved)."""
    shim, dp1, ldp, got = shim_with([1, 2, 3])
    shim._direct_to(1, None)
    dp2 = Bridge(2, [1, 2, 3])
    shim.phys[2] = dp2
    shim.map.add_instance(1, Instance(2, {1: Local(1), 2: Local(2), 3: Local(3)},
                                      {1: 1, 2: 2, 3: 3}))
    return shim, dp1, dp2, got


def test_a_port_down_on_any_instance_is_reported_once_and_up_when_up_everywhere():
    shim, dp1, dp2, got = two_instances()
    shim._port_status(port_status(dp2, 1, False))
    shim._port_status(port_status(dp1, 1, False))
    shim._port_status(port_status(dp2, 1, True))
    assert states(got) == [False]
    shim._port_status(port_status(dp1, 1, True))
    assert states(got) == [False, True] and [m.msg.desc.port_no for m in got] == [1, 1]


def test_a_retired_instance_frees_its_ports_after_the_port_status_already_queued():
    shim, dp1, dp2, got = two_instances()
    shim._port_status(port_status(dp2, 1, False))  # down where the host was
    assert states(got) == [False]
    loop, queue = shim.loop, []
    shim.loop, shim.send_event = object(), lambda name, ev: queue.append(ev)  # another thread
    queued = port_status(dp1, 1, False)  # the platform queued it: down on the instance that stays
    queue.append(queued)
    shim.map.remove_instance(1, 2)
    shim.instance_ports_gone(shim.map.logical(1), 2)  # the operation retiring bridge 2
    assert shim.ports[1].down[1] == {2}  # nothing decided yet
    shim.loop = loop
    for ev in queue:  # the event loop, in order
        (shim._port_status if ev is queued else shim._on_loop)(ev)
    assert states(got) == [False]  # still down: no "up" for a port that is down on bridge 1
    assert shim.ports[1].down[1] == {1}


def test_a_retired_instance_that_held_a_port_down_alone_reports_it_up():
    shim, dp1, dp2, got = two_instances()
    shim._port_status(port_status(dp2, 1, False))
    shim.map.remove_instance(1, 2)
    shim.instance_ports_gone(shim.map.logical(1), 2)  # in the event loop: at once
    assert states(got) == [False, True]
