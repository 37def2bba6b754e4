"""Ryu's own installed `ryu.app.simple_switch_13` on the LIME shim, under real Ryu 4.34: its code
is the installed one (only where its OpenFlow events come from changes, at load time); s3 is
cloned onto s3p and retired while h1 pings h2 every 2 ms, and no ping is lost."""
from __future__ import annotations

import re
import subprocess
import pytest

from sdnmig import lime_lab
from sdnmig.lab import ping, poll, rx_packets
from sdnmig.lime_lab import SHIM_COOKIE, lime_op, ping_bg, ping_result, s3_request
from tests.integration.test_lime import tx_packets
from topologies.testbeds import spare_dpid

pytestmark = pytest.mark.ryu


rules = lime_lab.flows


def shims_only(bridge: str) -> bool:
    """The bridge has rules, and every one is the shim's (none the app's own)."""
    found = rules(bridge)
    return bool(found) and all(f"cookie={SHIM_COOKIE}" in ln for ln in found)


def test_simple_switch_13_survives_clone_and_retire_of_s3(controllers, mininet, ryu_platform):
    topo, c1, net = lime_lab.start(controllers, mininet, apps=("lime", "simple_switch_13"),
                                   platform=ryu_platform)
    s1, s2, s3, s3p = (topo.prefix + n for n in ("s1", "s2", "s3", "s3p"))
    h1, h2 = (net.get(h) for h in topo.hosts())
    poll(lambda: ping(h1, h2, count=2, interval=0.2)["received"] == 2 or None, 15,
         "h1 reaching h2 through the shim")
    log = c1.controller_log.read_text()
    assert "instantiating app ryu_apps.hosted.simple_switch_13 of SimpleSwitch13" in log, log
    assert re.search(r"packet in 3 \S+ \S+ \d+", log), "simple_switch_13 saw logical switch 3"
    # s3 is direct until a migration touches it: the app's own rules, as it sent them
    assert rules(s3) and not lime_lab.shim_flows(s3) and not rules(s3p)

    pings = ping_bg(h1, h2, count=2500, interval=0.002)
    start = rx_packets(h2)
    poll(lambda: rx_packets(h2) >= start + 100, 10, "pings flowing before the clone")
    got = lime_op(c1, op="clone", **s3_request(topo, net))
    assert got["ok"] and got["instances"] == [3, spare_dpid(3)], got
    assert shims_only(s3p), "the clone has the rules, in the shim's form"
    assert shims_only(s3), "s3 adopted: the app's rules replaced by the shim's copies"
    poll(lambda: tx_packets(f"{s3p}-eth2") >= 100, 10, "pings through the clone")
    got = lime_op(c1, op="retire", switch=3, instance=3)
    assert got["ok"] and got["instances"] == [spare_dpid(3)], got
    assert ping_result(pings) == {"sent": 2500, "lost": 0, "dup": 0}
    assert not rules(s3), "the retired instance keeps no rules"
    subprocess.run(["ovs-vsctl", "set", "interface", f"{s3}-eth1", "admin_state=down"], check=True)
    assert ping(h1, h2, count=5, interval=0.05)["received"] == 5, "through s3p, s3 out of the path"
