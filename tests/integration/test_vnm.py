"""Whole-network migration on real OVS (VnmTopo: old network o1..o4, new n1..n4, tunnel switch
t0) with the paper's control app flipping h1-h2's path every second throughout: h1 and h2
connected at every step; at most one ping lost per host move and none while preparing or
finalizing; after ALAP's last host move nothing crosses the tunnel switch; after finalize no rule
is left in the old network and no tunnel rule in the new one. And the refusals the issue names,
each changing nothing; and one run of experiments/vnm.py's harness (every link capped, UDP and
ping through all five phases)."""
from __future__ import annotations

import re
import time
from typing import Any, Dict, List

import pytest

from ryu_apps.vnm import core
from sdnmig import lime_topo, vnm, vnm_lab, vnm_phases
from sdnmig.lab import poll
from sdnmig.lime_lab import flows, lime_op, ping_bg, ping_result, reach_all
from sdnmig.vnm_lab import INDEX, vnm_op

COUNTERS = re.compile(r"\b(duration|n_packets|n_bytes|idle_age|hard_age)=[^,\s]*,?\s*")
TUNNEL_MARKS = ("push_vlan", "pop_vlan", "mod_vlan_vid", "dl_vlan", "vlan_tci", "resubmit",
                "load:")


def _under_pings(src: Any, dst: Any, action: Any, count: int = 1500) -> Dict[str, int]:
    proc = ping_bg(src, dst, count, 0.002)
    poll(lambda: proc.poll() is None or None, 5, "ping running")
    time.sleep(0.3)  # noqa: a lead of pings before the command (not a wait for a condition)
    got = action()
    assert got["ok"], got
    return ping_result(proc)


def _flipped(inst: Any) -> int:
    return inst.controller_log.read_text(errors="replace").count("pathflip: flip ")


def _state(inst: Any, topo: Any) -> List[Any]:
    """Everything a refused command must leave as it was."""
    p = topo.prefix
    rules = {b: sorted(COUNTERS.sub("", ln).strip() for ln in flows(p + b))
             for b in [f"o{i}" for i in INDEX] + [f"n{i}" for i in INDEX] + ["t0"]}
    vnm = vnm_op(inst, op="status")
    lime = lime_op(inst, op="status")
    return [vnm["state"], lime["switches"], lime["places"], rules]


@pytest.mark.parametrize("algorithm", ["alap", "asap"])
def test_whole_network_migration(controllers, mininet, algorithm):
    topo, c1, net = vnm_lab.start(controllers, mininet)
    p = topo.prefix
    h1, h2 = vnm_lab.hosts(topo, net)
    reach_all([h1, h2])
    flips = _flipped(c1)
    layout = vnm_lab.layout(topo, net)

    r = _under_pings(h1, h2, lambda: vnm_op(c1, op="prepare", algorithm=algorithm, layout=layout))
    assert r["lost"] == 0 and r["dup"] == 0, r
    assert len(flows(p + "t0")) == 8, "the tunnel switch patches each pair both ways"
    reach_all([h1, h2])

    for name, (src, dst) in (("h1", (h2, h1)), ("h2", (h1, h2))):
        r = _under_pings(src, dst, lambda: vnm_lab.migrate(c1, topo, net, name))
        assert r["lost"] <= 1 and r["dup"] == 0, (name, r)
        reach_all([h1, h2])

    # ALAP: both hosts on the new network, whose every switch holds the rules: t0 is idle.
    # ASAP: the new network still only relays: every packet crosses at its first and last hop.
    last = [vnm_lab.tunnel_packets(topo)]

    def still() -> bool:
        now = vnm_lab.tunnel_packets(topo)
        quiet = now == last[0]
        last[0] = now
        return quiet
    poll(lambda: still() or None, 10, "the tunnel switch's counters settling", interval=1.2)
    before = vnm_lab.tunnel_packets(topo)
    r1, r2 = ping_bg(h1, h2, 500, 0.004), ping_bg(h2, h1, 500, 0.004)
    assert ping_result(r1)["lost"] == 0 and ping_result(r2)["lost"] == 0
    time.sleep(1.2)  # noqa: OVS pushes port counters about every 0.5 s: let them catch up
    crossed = vnm_lab.tunnel_packets(topo) - before
    if algorithm == "alap":
        assert crossed == 0, "a packet crossed the tunnel after ALAP's moves"
    else:
        assert crossed >= 4 * 1000, f"ASAP's relays: each packet crosses twice, {crossed} seen"

    r = _under_pings(h1, h2, lambda: vnm_op(c1, op="finalize"))
    assert r["lost"] == 0 and r["dup"] == 0, r
    for i in INDEX:
        assert flows(f"{p}o{i}") == [], f"o{i} keeps rules after finalize"
        left = [ln for ln in flows(f"{p}n{i}") if any(m in ln for m in TUNNEL_MARKS)]
        assert left == [], f"n{i} keeps tunnel rules: {left}"
    assert flows(p + "t0") == [], "the tunnel switch keeps its patch"
    state = vnm_op(c1, op="status")["state"]
    assert state["state"] == "finalized" and state["moved"] == ["h1", "h2"]
    assert lime_op(c1, op="status")["switches"] == {
        f"{vnm_lab.old(i):#x}": [f"{vnm_lab.new(i):#x}"] for i in INDEX}

    # The old network is out of the path: take it down; the flips go on, h1 and h2 connected.
    for i in INDEX:
        net.get(f"{p}o{i}").stop(deleteIntfs=False)
    reach_all([h1, h2])
    poll(lambda: _flipped(c1) >= flips + 3 or None, 10, "pathflip flipping after finalize")


def test_vnm_refusals_change_nothing(controllers, mininet):
    # No flips here: a flip changes rules, and this test compares them before and after.
    topo, c1, net = vnm_lab.start(controllers, mininet, pathflip_period_s="3600")
    h1, h2 = vnm_lab.hosts(topo, net)
    reach_all([h1, h2])
    layout = vnm_lab.layout(topo, net)

    def refused(req: Dict[str, Any], says: str) -> None:
        before = _state(c1, topo)
        got = vnm_op(c1, **req)
        assert not got["ok"] and says in got["error"], (req, got)
        assert _state(c1, topo) == before, req

    refused({"op": "migrate", "host": "h1"}, "prepare first")
    refused({"op": "finalize"}, "prepare first")
    refused({"op": "prepare", "algorithm": "alap", "layout": {**layout, "tunnel_switch": "0x11"}},
            "also one of the networks' switches")
    refused({"op": "prepare", "algorithm": "fast", "layout": layout}, "unknown algorithm")
    # LIME refuses a step (a clone target that does not exist): the patch is taken back.
    bad = {**layout, "pairs": {**layout["pairs"], "0x14": "0x99"},
           "steps": [dict(s, onto=0x99) if s["switch"] == 0x14 else s for s in layout["steps"]],
           "hosts": {**layout["hosts"], "h2": {**layout["hosts"]["h2"], "onto": "0x99"}}}
    refused({"op": "prepare", "algorithm": "alap", "layout": bad}, "LIME refused ensemble")

    # The operator's planner (sdnmig vnm prepare: the wiring as Open vSwitch and the kernel
    # show it) finds the layout Mininet built.
    names = {h: (v["switch"], v["port"]) for h, v in layout["hosts"].items()}
    planned = vnm.Prepare("alap", {vnm_lab.old(i): vnm_lab.new(i) for i in INDEX},
                          vnm_lab.TUNNEL, names).request(lime_topo.topology(c1.target))
    assert planned["layout"] == core.layout_from(layout).to_doc()
    assert vnm_op(c1, **planned)["ok"]
    refused({"op": "prepare", "algorithm": "alap", "layout": layout}, "already prepared")
    refused({"op": "migrate", "host": "h9"}, "unknown host 'h9'")
    refused({"op": "migrate", "host": "h1", "algorithm": "asap"}, "cannot change mid-migration")
    refused({"op": "finalize"}, "hosts not moved yet: h1, h2")
    assert vnm_lab.migrate(c1, topo, net, "h1")["ok"]
    refused({"op": "migrate", "host": "h1"}, "h1 has already moved")
    refused({"op": "finalize"}, "hosts not moved yet: h2")
    refused({"op": "unplug"}, "unknown VNM command")
    reach_all([h1, h2])


def test_a_measured_alap_run_under_udp_load():
    # experiments/vnm.py's run, once: its own controller and network, every link capped
    run = vnm_lab.migration_run("alap", "udp", phase_s=5.0)
    steps = run["steps"]
    assert [s["command"] for s in steps] == list(vnm_phases.COMMANDS)
    held = [steps[0]["issued_s"]] + [b["issued_s"] - a["done_s"] for a, b in zip(steps, steps[1:])]
    assert min(held) >= 4.99, held   # 5 s each (the times are rounded to the millisecond)
    assert run["udp"]["packets"] >= 25_000, run["udp"]
    assert run["udp"]["lost"] <= run["udp"]["packets"] * 0.001, run["udp"]
    assert run["ping"]["dup"] == 0 and run["ping"]["sent"] >= 1000, run["ping"]
    phases = {p["phase"] for p in run["pings"]} | {iv["phase"] for iv in run["intervals"]}
    assert set(vnm_phases.PHASES) <= phases, phases   # every phase has its samples
