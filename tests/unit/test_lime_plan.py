"""lime_shim.plan on the LIME testbeds' wiring (written out by hand, as Mininet numbers the ports of
topologies.testbeds), on random wirings (hypothesis), and the request checks; sdnmig.lime_topo's
pure part on a hand-made kernel view."""
from __future__ import annotations

from typing import Dict, List, Tuple, Union

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lime_shim import plan
from lime_shim.plan import Peer, PlanError
from sdnmig import lime, lime_topo

End = Tuple[Union[int, str], int]  # (switch dpid or host name, port)


def wiring(links: List[Tuple[End, End]]) -> Dict[int, Dict[int, Peer]]:
    """Topology from explicit links; a host's own port number is ignored."""
    topo: Dict[int, Dict[int, Peer]] = {}
    for a, b in links:
        for (node, port), (other, oport) in ((a, b), (b, a)):
            if isinstance(node, int):
                topo.setdefault(node, {})[port] = (
                    Peer(switch=other, port=oport) if isinstance(other, int) else Peer(host=other))
    return topo


# LimeTopo: h1-s1-s3-s2-h2, the spare s3p (0x103) linked to s1 and s2.
LIME = wiring([
    (("h1", 0), (1, 1)), (("h2", 0), (2, 1)),
    ((1, 2), (3, 1)), ((3, 2), (2, 2)),
    ((1, 3), (0x103, 1)), ((0x103, 2), (2, 3)),
])

# LimeEnsembleTopo: s1-s2-s3 and s1p-s2p-s3p; h1 on s1, h2 on s2, h3 and h4 on s3, each also
# linked to its switch's spare; a migration link from every switch to its spare.
ENSEMBLE = wiring([
    ((1, 1), (2, 1)), ((2, 2), (3, 1)),
    ((0x101, 1), (0x102, 1)), ((0x102, 2), (0x103, 1)),
    (("h1", 0), (1, 2)), (("h1", 1), (0x101, 2)),
    (("h2", 0), (2, 3)), (("h2", 1), (0x102, 3)),
    (("h3", 0), (3, 2)), (("h3", 1), (0x103, 2)),
    (("h4", 0), (3, 3)), (("h4", 1), (0x103, 3)),
    ((1, 3), (0x101, 3)), ((2, 4), (0x102, 4)), ((3, 4), (0x103, 4)),
])
PAIRS = {1: 0x101, 2: 0x102, 3: 0x103}


def test_lime_clone_of_s3_is_the_hand_written_request_of_test_lime() -> None:
    got = plan.clone_request(LIME, 3, 0x103)
    assert got == {"switch": 3, "onto": 0x103, "ports": {1: 1, 2: 2}, "tunnels": {},
                   "neighbours": [[1, 2, 3], [2, 2, 3]]}
    assert plan.check("clone", got) == {"op": "clone", **got}


def test_lime_switches_linked_to_the_spare_keep_that_link_out_of_their_ports() -> None:
    assert plan.logical_ports(LIME, 1, [0x103]) == [1, 2]
    assert plan.logical_ports(LIME, 1, []) == [1, 2, 3]


def test_a_host_or_an_unreachable_neighbour_without_a_link_to_the_clone_cannot_be_planned() -> None:
    with pytest.raises(PlanError, match=r"port 1 of 0x3 \(to switch 0x1\)"):
        plan.clone_request({**LIME, 9: {}}, 3, 9)
    with pytest.raises(PlanError, match=r"port 1 of 0x1 \(to host h1\)"):
        plan.clone_request({**LIME, 9: {}}, 1, 9)
    with pytest.raises(PlanError, match="no bridge with datapath id 0x9"):
        plan.clone_request(LIME, 3, 9)
    with pytest.raises(PlanError, match="clone target itself"):
        plan.clone_request(LIME, 3, 0x103, spares=[3])


def test_ensemble_moves_together_and_tunnels_hosts_over_the_migration_links() -> None:
    steps = plan.ensemble_request(ENSEMBLE, PAIRS)["steps"]
    assert steps == [
        {"switch": 1, "onto": 0x101, "ports": {1: 1}, "tunnels": {2: [3, 3]}, "neighbours": []},
        {"switch": 2, "onto": 0x102, "ports": {1: 1, 2: 2}, "tunnels": {3: [4, 4]},
         "neighbours": []},
        {"switch": 3, "onto": 0x103, "ports": {1: 1}, "tunnels": {2: [4, 4], 3: [4, 4]},
         "neighbours": []},
    ]
    assert plan.check("ensemble", {"steps": steps})["steps"] == steps


def test_one_switch_of_the_ensemble_testbed_alone_tunnels_what_its_spare_cannot_reach() -> None:
    assert plan.clone_request(ENSEMBLE, 2, 0x102) == {
        "switch": 2, "onto": 0x102, "ports": {}, "tunnels": {1: [4, 4], 2: [4, 4], 3: [4, 4]},
        "neighbours": []}


def test_ensemble_input_errors() -> None:
    with pytest.raises(PlanError, match="at least one"):
        plan.ensemble_request(ENSEMBLE, {})
    with pytest.raises(PlanError, match="same target"):
        plan.ensemble_request(ENSEMBLE, {1: 0x101, 2: 0x101})


def test_move_host_finds_the_spares_port_to_the_same_host() -> None:
    assert plan.move_host_request(ENSEMBLE, 3, 2, 0x103) == {
        "switch": 3, "port": 2, "onto": 0x103, "onto_port": 2}
    assert plan.move_host_request(ENSEMBLE, 3, 3, 0x103)["onto_port"] == 3
    assert plan.move_host_request(ENSEMBLE, 1, 2, 0x101)["onto_port"] == 2
    with pytest.raises(PlanError, match="does not lead to a host"):
        plan.move_host_request(ENSEMBLE, 3, 1, 0x103)
    with pytest.raises(PlanError, match="no link to the host"):
        plan.move_host_request(ENSEMBLE, 3, 2, 0x101)


def test_parallel_links_are_paired_in_port_order() -> None:
    topo = wiring([((1, 1), (2, 5)), ((1, 2), (2, 6)), ((9, 1), (2, 7)), ((9, 2), (2, 8))])
    assert plan.clone_request(topo, 1, 9) == {
        "switch": 1, "onto": 9, "ports": {1: 1, 2: 2}, "tunnels": {},
        "neighbours": [[2, 5, 7], [2, 6, 8]]}


# -- random wirings -------------------------------------------------------------------------------

@st.composite
def wirings(draw: st.DrawFn) -> Tuple[Dict[int, Dict[int, Peer]], int, int]:
    """Switches 1..n, the spare 100, hosts; links between any two, ports numbered like Mininet."""
    n = draw(st.integers(2, 5))
    nodes: List[Union[int, str]] = [*range(1, n + 1), 100, "ha", "hb", "hc"]
    pairs = draw(st.lists(st.tuples(st.sampled_from(nodes), st.sampled_from(nodes)).filter(
        lambda ab: ab[0] != ab[1] and not all(isinstance(x, str) for x in ab)), max_size=14))
    pairs.append((1, draw(st.sampled_from(nodes[1:]))))  # the switch planned has a link
    nxt: Dict[Union[int, str], int] = {}
    links = []
    for a, b in pairs:
        ends = []
        for node in (a, b):
            nxt[node] = nxt.get(node, 0) + 1
            ends.append((node, nxt[node]))
        links.append((ends[0], ends[1]))
    topo = wiring(links)
    topo.setdefault(100, {})
    return topo, 1, 100


@settings(max_examples=300, deadline=None)
@given(wirings())
def test_every_plan_places_each_logical_port_once_on_real_links(case) -> None:
    topo, s, onto = case
    try:
        got = plan.clone_request(topo, s, onto)
    except PlanError:
        assert not plan.links_between(topo, onto, s), "a plan fails only without an S-S' link"
        return
    ports, tunnels = got["ports"], got["tunnels"]
    assert sorted([*ports, *tunnels]) == plan.logical_ports(topo, s, [onto])
    assert len(set(ports.values())) == len(ports), "two logical ports on one port of the clone"
    for p, q in ports.items():
        assert topo[onto][q].switch == topo[s][p].switch
    for q, p in tunnels.values():
        assert topo[onto][q] == Peer(switch=s, port=p)
    for n, nport, new in got["neighbours"]:
        assert topo[n][nport].switch == s and topo[n][new] == Peer(switch=onto, port=ports[
            topo[n][nport].port])
    plan.check("clone", got)


# -- checking request bodies ----------------------------------------------------------------------

def test_check_turns_json_text_into_whole_numbers() -> None:
    body = {"switch": "0x3", "onto": 259, "ports": {"1": 1, "2": "2"}, "tunnels": {"3": [4, 5]},
            "neighbours": [[1, 2, 3]]}
    assert plan.check("freeze", body) == {"op": "freeze", "switch": 3, "onto": 259,
                                          "ports": {1: 1, 2: 2}, "tunnels": {3: [4, 5]},
                                          "neighbours": [[1, 2, 3]]}
    assert plan.check("status", {}) == {"op": "status"}
    assert plan.check("retire_ensemble", {"steps": [{"switch": 3, "instance": 3}]}) == {
        "op": "retire_ensemble", "steps": [{"switch": 3, "instance": 3}]}


@pytest.mark.parametrize("op,body,message", [
    ("fly", {}, "unknown LIME operation"),
    ("status", {"x": 1}, "unknown field"),
    ("clone", {"switch": 3}, "'onto' is required"),
    ("clone", {"switch": 3, "onto": 1, "via": 2}, r"unknown field\(s\) via"),
    ("clone", {"switch": True, "onto": 1}, "not a whole number"),
    ("clone", {"switch": 3, "onto": -1}, "out of range"),
    ("clone", {"switch": 3, "onto": 1.5}, "not a whole number"),
    ("clone", {"switch": 3, "onto": 1, "ports": [1]}, "JSON object"),
    ("clone", {"switch": 3, "onto": 1, "ports": {"a": 1}}, "not a whole number"),
    ("clone", {"switch": 3, "onto": 1, "tunnels": {"1": [1]}}, "list of 2"),
    ("clone", {"switch": 3, "onto": 1, "neighbours": [[1, 2]]}, "list of 3"),
    ("clone", {"switch": 3, "onto": 1, "ports": {"1": 1}, "tunnels": {"1": [2, 3]}},
     "both ports and tunnels"),
    ("move_host", {"switch": 3, "port": 1, "onto": 2}, "'onto_port' is required"),
    ("retire", [], "JSON object"),
    ("ensemble", {"steps": []}, "at least one step"),
    ("ensemble", {"steps": [{"op": "clone", "switch": 1, "onto": 2}]}, r"step 1: unknown field"),
    ("retire_ensemble", {"steps": [{"switch": 1}]}, "'instance' is required"),
])
def test_check_refuses_bad_bodies(op: str, body, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan.check(op, body)


def test_operator_overrides_replace_planned_places_port_by_port() -> None:
    planned = plan.clone_request(ENSEMBLE, 1, 0x101, PAIRS)
    got = lime.with_overrides(planned, ports={2: 2}, neighbours=[[9, 9, 9]])
    assert got["ports"] == {1: 1, 2: 2} and got["tunnels"] == {}
    assert got["neighbours"] == [[9, 9, 9]]
    assert lime.with_overrides(planned, tunnels={1: [3, 3]})["ports"] == {}
    assert lime.parse_pairs(["1=0x101", "2=258"], "e") == {1: 0x101, 2: 0x102}


# -- sdnmig.lime_topo: the kernel's view made a Topology ------------------------------------------

def test_lime_topo_build_tells_switch_links_hosts_and_other_ends_apart() -> None:
    dpids = {"xs1": 1, "xs2": 2}
    ifaces = {"xs1-eth1": ("xs1", 1), "xs1-eth2": ("xs1", 2), "xs1-eth3": ("xs1", 3),
              "xs2-eth1": ("xs2", 1), "xs2-eth2": ("xs2", 2), "xs9-eth1": ("xs9", 1)}
    links = [{"ifindex": 10, "ifname": "xs1-eth1", "link": "xs2-eth1"},
             {"ifindex": 11, "ifname": "xs2-eth1", "link": "xs1-eth1"},
             {"ifindex": 12, "ifname": "xs1-eth2", "link_index": 2, "link_netnsid": 4},
             {"ifindex": 13, "ifname": "xs2-eth2", "link_index": 3, "link_netnsid": 4},
             {"ifindex": 14, "ifname": "xs1-eth3", "link": "stray"},
             {"ifindex": 15, "ifname": "stray", "link": "xs1-eth3"}]
    iflink = {"xs1-eth1": 11, "xs2-eth1": 10, "xs1-eth2": 2, "xs2-eth2": 3, "xs1-eth3": 15}
    topo = lime_topo.build(dpids, ifaces, links, iflink)
    assert topo == {1: {1: Peer(switch=2, port=1), 2: Peer(host="netns:4"),
                        3: Peer(host="if:stray")},
                    2: {1: Peer(switch=1, port=1), 2: Peer(host="netns:4")}}
    assert plan.move_host_request(topo, 1, 2, 2)["onto_port"] == 2


# -- through a tunnel switch (the VNM testbed) ----------------------------------------------------

def _network(base: int) -> List[Tuple[End, End]]:
    """One VnmTopo network: links 1-2, 2-4, 1-3, 3-4 in Mininet's addLink order."""
    s = {i: base + i for i in (1, 2, 3, 4)}
    return [((s[1], 1), (s[2], 1)), ((s[2], 2), (s[4], 1)),
            ((s[1], 2), (s[3], 1)), ((s[3], 2), (s[4], 2))]


# VnmTopo: old 0x11-0x14, new 0x21-0x24, each switch's port 3 to the tunnel switch 0x30 (ports
# 1-4 old, 5-8 new), h1 on 0x11:4 and 0x21:4, h2 on 0x14:4 and 0x24:4.
VNM = wiring(_network(0x10) + _network(0x20) +
             [((d, 3), (0x30, n + 1)) for n, d in enumerate([0x11, 0x12, 0x13, 0x14,
                                                             0x21, 0x22, 0x23, 0x24])] +
             [(("h1", 0), (0x11, 4)), (("h1", 1), (0x21, 4)),
              (("h2", 0), (0x14, 4)), (("h2", 1), (0x24, 4))])
VNM_PAIRS = {0x11: 0x21, 0x12: 0x22, 0x13: 0x23, 0x14: 0x24}


def test_an_ensemble_through_a_tunnel_switch_tunnels_hosts_over_both_uplinks() -> None:
    steps = plan.ensemble_request(VNM, VNM_PAIRS, via=0x30)["steps"]
    edge = {"ports": {1: 1, 2: 2}, "tunnels": {4: [3, 3]}, "neighbours": []}
    middle = {"ports": {1: 1, 2: 2}, "tunnels": {}, "neighbours": []}
    assert steps == [{"switch": o, "onto": n, **(edge if o in (0x11, 0x14) else middle)}
                     for o, n in sorted(VNM_PAIRS.items())]
    assert plan.check("ensemble", {"steps": steps})["steps"] == steps


def test_without_the_tunnel_switch_the_vnm_testbed_cannot_be_planned() -> None:
    with pytest.raises(PlanError, match=r"port 4 of 0x11 \(to host h1\).*no 0x11-0x21 link"):
        plan.ensemble_request(VNM, VNM_PAIRS)


def test_a_lone_clone_through_the_tunnel_switch_tunnels_every_neighbour_it_cannot_reach() -> None:
    assert plan.clone_request(VNM, 0x12, 0x22, via=0x30) == {
        "switch": 0x12, "onto": 0x22, "ports": {}, "tunnels": {1: [3, 3], 2: [3, 3]},
        "neighbours": []}


def test_the_tunnel_ends_are_onto_then_switch_each_its_first_link_to_the_tunnel_switch() -> None:
    topo = wiring([(("h", 0), (1, 1)), (("h", 1), (2, 5)),
                   ((1, 3), (9, 1)), ((2, 8), (9, 3)), ((2, 7), (9, 2))])
    assert plan.clone_request(topo, 1, 2, via=9) == {
        "switch": 1, "onto": 2, "ports": {}, "tunnels": {1: [7, 3]}, "neighbours": []}
    assert plan.logical_ports(topo, 1, [2, 9]) == [1]


def test_tunnel_switch_errors_say_which_link_is_missing() -> None:
    lacking = {d: dict(ports) for d, ports in VNM.items()}
    del lacking[0x24][3]
    with pytest.raises(PlanError, match=r"port 4 of 0x14 \(to host h2\).*no 0x24-0x30 link "
                                        r"\(tunnel switch\)"):
        plan.ensemble_request(lacking, VNM_PAIRS, via=0x30)
    with pytest.raises(PlanError, match="no bridge with datapath id 0x31"):
        plan.ensemble_request(VNM, VNM_PAIRS, via=0x31)
    with pytest.raises(PlanError, match="tunnel switch 0x21 is also moved or a clone target"):
        plan.ensemble_request(VNM, VNM_PAIRS, via=0x21)
    with pytest.raises(PlanError, match="tunnel switch 0x12 is also moved"):
        plan.clone_request(VNM, 0x11, 0x21, VNM_PAIRS, via=0x12)
