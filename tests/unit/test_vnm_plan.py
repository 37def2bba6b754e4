"""ryu_apps.vnm.plan on the VNM testbed's wiring (test_lime_plan.VNM, written out by hand as Mininet
numbers the ports of topologies.testbeds.VnmTopo): the planned layout is the hand-computed one,
and the wiring's faults are said clearly."""
from __future__ import annotations

from typing import Any, Dict

import pytest

from lime_shim.plan import Peer, PlanError
from ryu_apps.vnm import core
from ryu_apps.vnm.core import VnmError
from ryu_apps.vnm.plan import layout
from test_lime_plan import VNM, VNM_PAIRS
from test_vnm_core import layout as core_layout


def _move(old: int, new: int) -> Dict[str, Any]:
    return {"switch": hex(old), "port": 4, "onto": hex(new), "onto_port": 4}


EXPECTED = {
    "pairs": {"0x11": "0x21", "0x12": "0x22", "0x13": "0x23", "0x14": "0x24"},
    "tunnel_switch": "0x30",
    "patch": {"0x11": [1, 5], "0x12": [2, 6], "0x13": [3, 7], "0x14": [4, 8]},
    "uplinks": {"0x11": [3, 3], "0x12": [3, 3], "0x13": [3, 3], "0x14": [3, 3]},
    "steps": [{"switch": 0x11, "onto": 0x21, "ports": {1: 1, 2: 2}, "tunnels": {4: [3, 3]}},
              {"switch": 0x12, "onto": 0x22, "ports": {1: 1, 2: 2}, "tunnels": {}},
              {"switch": 0x13, "onto": 0x23, "ports": {1: 1, 2: 2}, "tunnels": {}},
              {"switch": 0x14, "onto": 0x24, "ports": {1: 1, 2: 2}, "tunnels": {4: [3, 3]}}],
    "hosts": {"0x11:4": _move(0x11, 0x21), "0x14:4": _move(0x14, 0x24)},
}


def _without(*ends: tuple) -> Dict[int, Dict[int, Peer]]:
    topo = {d: dict(ports) for d, ports in VNM.items()}
    for dpid, port in ends:
        del topo[dpid][port]
    return topo


def test_the_vnm_testbed_plans_to_the_hand_computed_layout() -> None:
    got = layout(VNM, VNM_PAIRS, 0x30)
    assert got == EXPECTED
    assert core.layout_from(got).to_doc()["patch"] == EXPECTED["patch"]


def test_named_hosts_give_the_layout_the_core_tests_use() -> None:
    got = layout(VNM, VNM_PAIRS, 0x30, {"h1": (0x11, 4), "h2": (0x14, 4)})
    assert got["hosts"] == {"h1": _move(0x11, 0x21), "h2": _move(0x14, 0x24)}
    mine, theirs = core.layout_from(got), core.layout_from(core_layout())
    assert mine == theirs
    assert list(mine.steps) == [{"tunnels": {}, **s} for s in theirs.steps]
    half = layout(VNM, VNM_PAIRS, 0x30, {"h2": (0x14, 4)})["hosts"]
    assert sorted(half) == ["0x11:4", "h2"]


def test_the_uplinks_and_patch_follow_the_first_link_to_the_tunnel_switch() -> None:
    topo = _without((0x21, 3), (0x30, 5))
    topo[0x21][7] = Peer(switch=0x30, port=9)
    topo[0x30][9] = Peer(switch=0x21, port=7)
    got = layout(topo, VNM_PAIRS, 0x30)
    assert got["uplinks"]["0x11"] == [3, 7] and got["patch"]["0x11"] == [1, 9]
    assert got["steps"][0]["tunnels"] == {4: [7, 3]}


@pytest.mark.parametrize("topo,pairs,t0,names,error", [
    (_without((0x12, 3), (0x30, 2)), VNM_PAIRS, 0x30, None,
     "0x12 has no link to the tunnel switch 0x30"),
    (_without((0x24, 4)), VNM_PAIRS, 0x30, None,
     r"the host on port 4 of 0x14 \(h2\) has no port on 0x24"),
    (VNM, VNM_PAIRS, 0x30, {"h9": (0x11, 9)},
     r"host h9: port 9 of 0x11 leads to no host of an old switch \(hosts on 0x11:4, 0x14:4\)"),
    (VNM, VNM_PAIRS, 0x30, {"h1": (0x21, 4)}, "port 4 of 0x21 leads to no host"),
    (VNM, VNM_PAIRS, 0x30, {"a": (0x11, 4), "b": (0x11, 4)},
     "hosts a and b are both on port 4 of 0x11"),
    (VNM, VNM_PAIRS, 0x30, {"0x14:4": (0x11, 4)}, "host name 0x14:4 is given to two ports"),
    (VNM, {}, 0x30, None, "at least one old switch"),
    (VNM, VNM_PAIRS, 0x31, None, "no bridge with datapath id 0x31"),
    (VNM, {**VNM_PAIRS, 0x30: 0x31}, 0x30, None, "tunnel switch 0x30 is also moved"),
    (VNM, VNM_PAIRS, 0x24, None, "tunnel switch 0x24 is also moved or a clone target"),
    (VNM, {0x11: 0x21, 0x12: 0x21}, 0x30, None, "same target"),
])
def test_wiring_faults_are_said_clearly(topo: Any, pairs: Any, t0: int, names: Any,
                                        error: str) -> None:
    with pytest.raises(PlanError, match=error):
        layout(topo, pairs, t0, names)


def test_a_neighbour_that_would_be_rewired_is_refused_by_the_core() -> None:
    topo = {d: dict(ports) for d, ports in VNM.items()}
    topo[0x22][9] = Peer(switch=0x14, port=9)
    topo[0x14][9] = Peer(switch=0x22, port=9)
    pairs = {o: n for o, n in VNM_PAIRS.items() if o != 0x14}
    with pytest.raises(VnmError, match="may give only ports and tunnels"):
        layout(topo, pairs, 0x30)
