"""Each paper's testbed builds on real OVS with the suite's switch settings, and carries traffic."""
from __future__ import annotations

import json
import subprocess

from topologies.testbeds import LimeEnsembleTopo, LimeTopo, MetaTopo, VnmTopo

from sdnmig.lab import ping, unique_prefix, wait_roles


def _bridge_settings(name: str) -> dict:
    out = subprocess.run(["ovs-vsctl", "--format=json", "--columns=fail_mode,datapath_type,"
                          "protocols,other_config", "list", "bridge", name],
                         capture_output=True, text=True, check=True).stdout
    row = json.loads(out)["data"][0]
    return {"fail_mode": row[0], "datapath_type": row[1], "protocols": row[2][1],
            "other_config": dict(row[3][1])}


def _ports(name: str) -> int:
    return len(subprocess.run(["ovs-vsctl", "list-ports", name], capture_output=True, text=True,
                              check=True).stdout.split())


def _assert_suite_bridge(name: str) -> None:
    s = _bridge_settings(name)
    assert s["fail_mode"] == "secure" and s["datapath_type"] == "netdev", s
    assert s["protocols"] == ["OpenFlow13", "OpenFlow14", "OpenFlow15"], s
    assert s["other_config"].get("disable-in-band") == "true", s


def test_lime_testbed_forwards_through_s3_with_the_spare_detached(controllers, mininet):
    (c1,) = controllers.start(1)
    topo = LimeTopo(prefix=unique_prefix())
    p = topo.prefix

    def detach_spare(net):  # s1-s3-s2 and s1-s3p-s2 form a loop: keep the spare out for now
        net.configLinkStatus(p + "s1", p + "s3p", "down")
        net.configLinkStatus(p + "s3p", p + "s2", "down")

    net = mininet(topo, [c1], before_start=detach_spare)
    wait_roles(net, [c1], {s: "c1" for s in topo.switches()})
    for sw in topo.switches():
        _assert_suite_bridge(sw)
    assert {sw: _ports(sw) for sw in topo.switches()} == {
        p + "s1": 3, p + "s2": 3, p + "s3": 2, p + "s3p": 2}
    result = ping(net.get(p + "h1"), net.get(p + "h2"), count=5)
    assert result["received"] == 5 and result["duplicates"] == 0, result


def test_lime_ensemble_and_vnm_testbeds_are_wired_as_specified(controllers, mininet):
    # No master: nothing floods, so the loops these testbeds contain stay quiet.
    c1, c2 = controllers.start(2, master="none")
    ens = LimeEnsembleTopo(prefix=unique_prefix())
    vnm = VnmTopo(prefix=unique_prefix())
    for topo, ports in ((ens, {"s1": 3, "s2": 4, "s3": 4, "s1p": 3, "s2p": 4, "s3p": 4}),
                        (vnm, {"o1": 4, "o2": 3, "o3": 3, "o4": 4, "n1": 4, "n2": 3, "n3": 3,
                               "n4": 4, "t0": 8})):
        net = mininet(topo, [c1, c2])
        wait_roles(net, [c1, c2], {s: "none" for s in topo.switches()})
        assert {sw[len(topo.prefix):]: _ports(sw) for sw in topo.switches()} == ports
        for sw in topo.switches():
            _assert_suite_bridge(sw)


def test_meta_testbed_with_controllers_in_their_own_namespaces(namespaced):
    topo = MetaTopo(switches=3, controllers=2, namespaces=True, prefix=unique_prefix())
    net, (c1, c2) = namespaced(topo, 2)
    assert (c1.host, c2.host) == ("10.254.0.1", "10.254.0.2")
    data_switches = [s for s in topo.switches() if not s.endswith("m0")]
    wait_roles(net, [c1, c2], {s: "c1" for s in data_switches})
    hosts = [net.get(topo.prefix + f"h{i}") for i in (1, 2, 3)]
    assert net.ping(hosts, timeout=1) == 0.0


def test_a_shaped_testbed_caps_every_link_both_ways(controllers, mininet):
    (c1,) = controllers.start(1, master="none")
    topo = VnmTopo(prefix=unique_prefix(), bw=24)
    net = mininet(topo, [c1], shaped=True)
    ends = [i for link in net.links for i in (link.intf1, link.intf2)]
    assert len(ends) == 2 * (2 * 4 + 8 + 4)   # each network's 4 links, 8 to t0, 4 to hosts
    for intf in ends:
        out = intf.node.cmd(f"tc class show dev {intf.name}")
        assert "htb" in out and "rate 24Mbit" in out, (intf.name, out)
