"""ryu_apps.vnm.core: the whole-network migration's commands, in order and out of order.

The layout is the VNM testbed's (topologies/testbeds.VnmTopo): old switches 0x11-0x14, new ones
0x21-0x24, tunnel switch 0x30; on every switch ports 1 and 2 join the network, 3 goes to the
tunnel switch and 4 (edges only) to the host; the tunnel switch's ports 1-4 go to the old switches,
5-8 to the new ones. Every refused command must change nothing (compared as the saved document)."""
from __future__ import annotations

import copy
import json
import re
from typing import Any, Dict, List

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from lime_shim.model import Output, VLAN_PRESENT, match_get
from ryu_apps.vnm import core
from ryu_apps.vnm.core import FINALIZED, IDLE, PREPARED, Vnm, VnmError

OLD = [0x11, 0x12, 0x13, 0x14]
NEW = [0x21, 0x22, 0x23, 0x24]
HOSTS = {"h1": (0x11, 0x21), "h2": (0x14, 0x24)}
UNPATCH = {"switch": 0x30, "cookie": core.PATCH_COOKIE}


def layout(**change: Any) -> Dict[str, Any]:
    steps = []
    for o, n in zip(OLD, NEW):
        step: Dict[str, Any] = {"switch": o, "onto": n, "ports": {"1": 1, "2": 2}}
        if o in (0x11, 0x14):
            step["tunnels"] = {"4": [3, 3]}
        steps.append(step)
    doc = {"pairs": {hex(o): hex(n) for o, n in zip(OLD, NEW)},
           "tunnel_switch": "0x30",
           "patch": {hex(o): [i + 1, i + 5] for i, o in enumerate(OLD)},
           "uplinks": {hex(o): [3, 3] for o in OLD},
           "steps": steps,
           "hosts": {name: {"switch": o, "port": 4, "onto": n, "onto_port": 4}
                     for name, (o, n) in HOSTS.items()}}
    doc.update(change)
    return doc


def prepared(algorithm: str = "alap") -> Vnm:
    v = Vnm()
    body = {"algorithm": algorithm, "layout": layout()}
    v.plan("prepare", body)
    v.commit("prepare", body)
    return v


def run(v: Vnm, command: str, body: Any = None) -> List[core.Step]:
    steps = v.plan(command, body)
    v.commit(command, body)
    return steps


def test_alap_prepares_the_patch_then_one_ensemble_moves_hosts_and_finalizes_by_retiring():
    v = Vnm()
    prepare, ensemble = v.plan("prepare", {"algorithm": "alap", "layout": layout()})
    assert prepare.kind == "patch" and prepare.undo == core.Step("unpatch", UNPATCH)
    assert ensemble.kind == "lime" and ensemble.body["op"] == "ensemble"
    assert [s["switch"] for s in ensemble.body["steps"]] == OLD
    assert all("relay" not in s for s in ensemble.body["steps"])
    assert v.state == IDLE  # planning changes nothing
    v.commit("prepare", {"algorithm": "alap", "layout": layout()})
    (move,) = run(v, "migrate", {"host": "h1"})
    assert move.body == {"op": "move_host", "switch": 0x11, "port": 4, "onto": 0x21,
                         "onto_port": 4}
    run(v, "migrate", {"host": "h2", "algorithm": "alap"})
    retire, unpatch = run(v, "finalize")
    assert retire.body == {"op": "retire_ensemble",
                           "steps": [{"switch": o, "instance": o} for o in OLD]}
    assert unpatch == core.Step("unpatch", UNPATCH) and v.state == FINALIZED


def test_asap_relays_every_new_switch_through_its_uplink_and_promotes_before_retiring():
    v = Vnm()
    _, ensemble = run(v, "prepare", {"algorithm": "asap", "layout": layout()})
    assert [s["relay"] for s in ensemble.body["steps"]] == [[3, 3]] * 4
    run(v, "migrate", {"host": "h2"})
    run(v, "migrate", {"host": "h1"})
    promote, retire, _ = run(v, "finalize", {"algorithm": "asap"})
    assert promote.body == {"op": "promote_ensemble",
                            "steps": [{"switch": o, "instance": n} for o, n in zip(OLD, NEW)]}
    assert retire.body["op"] == "retire_ensemble" and v.moved == ("h2", "h1")


def test_the_patch_joins_each_pair_for_tagged_frames_only_both_ways():
    rules = core.patch_rules(core.layout_from(layout()))
    ends = {(match_get(r.match, "in_port"), r.actions) for r in rules}
    assert ends == {(a, (Output(b),)) for i in range(4)
                    for a, b in ((i + 1, i + 5), (i + 5, i + 1))}
    assert {match_get(r.match, "vlan_vid") for r in rules} == {(VLAN_PRESENT, VLAN_PRESENT)}
    assert {r.cookie for r in rules} == {core.PATCH_COOKIE}


@pytest.mark.parametrize("state,command,body,error", [
    ("idle", "migrate", {"host": "h1"}, "prepare first"),
    ("idle", "finalize", None, "prepare first"),
    ("prepared", "prepare", {"algorithm": "alap", "layout": layout()}, "already prepared (alap)"),
    ("prepared", "migrate", {"host": "h9"}, "unknown host 'h9': known h1, h2"),
    ("prepared", "migrate", {"host": "h1", "algorithm": "asap"}, "cannot change mid-migration"),
    ("prepared", "finalize", None, "hosts not moved yet: h1, h2"),
    ("moved", "migrate", {"host": "h1"}, "h1 has already moved to 0x21"),
    ("moved", "finalize", None, "hosts not moved yet: h2"),
    ("finalized", "migrate", {"host": "h2"}, "finalized: nothing left to do"),
    ("finalized", "finalize", None, "finalized: nothing left to do"),
    ("idle", "prepare", {"algorithm": "fast", "layout": layout()}, "unknown algorithm 'fast'"),
    ("idle", "prepare", {"algorithm": "alap"}, "field(s) layout required"),
    ("idle", "migrate", {"host": "h1", "now": True}, "unknown field(s) now"),
    ("idle", "rollback", None, "unknown VNM command 'rollback'"),
    ("idle", "migrate", {"host": 1}, "host must be a name"),
    ("idle", "status", [], "the body must be a JSON object"),
])
def test_a_refused_command_says_why_and_changes_nothing(state, command, body, error):
    v = Vnm()
    if state != "idle":
        v = prepared()
        if state in ("moved", "finalized"):
            run(v, "migrate", {"host": "h1"})
        if state == "finalized":
            run(v, "migrate", {"host": "h2"})
            run(v, "finalize")
    before = json.dumps(v.to_doc(), sort_keys=True)
    with pytest.raises(VnmError, match=re.escape(error)):
        v.plan(command, body)
    assert json.dumps(v.to_doc(), sort_keys=True) == before


def _without(doc: Dict[str, Any], *path: str) -> Dict[str, Any]:
    doc = copy.deepcopy(doc)
    *parents, last = path
    for p in parents:
        doc = doc[p] if isinstance(doc, dict) else doc[int(p)]
    del doc[last]
    return doc


def _bad_step_tunnel() -> Dict[str, Any]:
    doc = layout()
    doc["steps"][0]["tunnels"] = {"4": [1, 1]}
    return doc


@pytest.mark.parametrize("doc,error", [
    (layout(pairs={}), "pairs must map each old switch"),
    (layout(pairs={"0x11": "0x21", "0x12": "0x21"}), "the same new one"),
    (layout(pairs={"0x11": "0x12", "0x12": "0x21"}), "0x12 is in both networks"),
    (layout(tunnel_switch="0x21"), "tunnel switch 0x21 is also one of the networks"),
    (layout(patch={"0x11": [1, 5]}), "patch must cover every pair: it lacks 0x12, 0x13, 0x14"),
    (layout(patch={hex(o): [1, 5] for o in OLD}), "uses tunnel-switch port 1 twice"),
    (layout(uplinks={"0x99": [3, 3]}), "uplinks names 0x99, which is no old switch"),
    (layout(steps=layout()["steps"][:3]), "clone each old switch onto its counterpart"),
    (_bad_step_tunnel(), r"port 4 of 0x11 is tunnelled through \[1, 1\]"),
    (layout(hosts={"h1": {"switch": 0x11, "port": 4, "onto": 0x22, "onto_port": 4}}),
     "moves from 0x11 to 0x22, which is not a pair"),
    (layout(hosts={"h1": {"switch": 0x11, "port": 4, "onto": 0x21, "onto_port": 4},
                   "h3": {"switch": 0x11, "port": 4, "onto": 0x21, "onto_port": 5}}),
     "two hosts are on port 0x11:4"),
    (layout(pairs={"0x11": "0x21", "17": "0x22"}), "names old switch 0x11 twice"),
    (layout(tunnel_switch="zz"), "layout: tunnel_switch 'zz' is not a whole number"),
    (layout(steps=[]), "layout: steps must name at least one step"),
    (layout(patch={hex(o): [0, i + 5] for i, o in enumerate(OLD)}), "is not a port of a switch"),
    (layout(hosts={"h1": {"switch": 0x11, "port": 4, "onto": 0x21, "onto_port": 0xFFFFFFFB}}),
     "h1's new port 4294967291 is not a port of a switch"),
    (layout(hosts={"h1": {"switch": 0x11, "port": 2, "onto": 0x21, "onto_port": 4}}),
     "h1's port 2 of 0x11 is not tunnelled"),
    (layout(hosts={"h1": {"switch": 0x11, "port": 4, "onto": 0x21, "onto_port": 3}}),
     "its uplink to the tunnel switch"),
    (layout(hosts={"h1": {"switch": 0x11, "port": 4, "onto": 0x21, "onto_port": 4},
                   "h3": {"switch": 0x11, "port": 5, "onto": 0x21, "onto_port": 4}}),
     "two hosts would move onto port 0x21:4"),
    (layout(steps=[dict(s, neighbours=[[0x12, 1, 1]]) for s in layout()["steps"]]),
     "may give only ports and tunnels"),
    (_without(layout(), "uplinks"), "lacks uplinks"),
    (layout(extra=1), "unknown field"),
    ("not a layout", "must be a JSON object"),
])
def test_a_layout_that_does_not_hold_together_is_refused(doc, error):
    with pytest.raises(VnmError, match=error):
        Vnm().plan("prepare", {"algorithm": "alap", "layout": doc})


def test_the_state_survives_a_restart_through_its_document():
    v = prepared("asap")
    run(v, "migrate", {"host": "h2"})
    again = Vnm.from_doc(json.loads(json.dumps(v.to_doc())))
    assert (again.state, again.algorithm, again.moved) == (PREPARED, "asap", ("h2",))
    assert again.to_doc() == v.to_doc()
    assert again.to_doc()["hosts"] == {"h1": {"on": "0x11", "moved": False},
                                       "h2": {"on": "0x24", "moved": True}}


def _saved(**change: Any) -> Dict[str, Any]:
    v = prepared()
    run(v, "migrate", {"host": "h1"})
    doc = json.loads(json.dumps(v.to_doc()))
    doc.update(change)
    return doc


@pytest.mark.parametrize("doc,error", [
    (None, "must be a JSON object"), ([], "must be a JSON object"),
    ({"state": "paused"}, "is none of idle"),
    ({"state": "idle", "moved": ["h1"]}, "idle VNM state has a migration"),
    ({"state": "prepared", "algorithm": "alap"}, "lacks its layout"),
    (_saved(algorithm="fast"), "lacks its layout or a known algorithm"),
    (_saved(moved=None), "must be a list of names"),
    (_saved(moved="h1"), "must be a list of names"),
    (_saved(moved=["h9"]), "unknown host 'h9'"),
    (_saved(moved=["h1", "h1"]), "host h1 moved twice"),
    (_saved(state="finalized"), "hosts that never moved"),
    (_saved(layout={"pairs": 3}), "the layout lacks"),
    (_saved(layout=dict(layout(), tunnel_switch=[])), "layout: tunnel_switch [] is not"),
])
def test_a_corrupted_saved_state_is_refused_with_a_reason(doc, error):
    with pytest.raises(VnmError, match=re.escape(error)):
        Vnm.from_doc(doc)


def test_a_commit_the_state_does_not_allow_is_refused():
    v = prepared()
    with pytest.raises(VnmError, match="unknown host 'h9'"):
        v.commit("migrate", {"host": "h9"})
    with pytest.raises(VnmError, match="hosts not moved yet"):
        v.commit("finalize", None)
    assert v.moved == () and v.state == PREPARED


def test_finalize_has_happened_once_the_old_network_is_retired():
    v = prepared()
    for h in ("h1", "h2"):
        run(v, "migrate", {"host": h})
    assert [s.final for s in v.plan("finalize", None)] == [True, False]
    assert not any(s.final for s in prepared().plan("migrate", {"host": "h1"}))


def test_a_finalized_migration_can_be_followed_by_a_new_one():
    v = prepared()
    for h in ("h1", "h2"):
        run(v, "migrate", {"host": h})
    run(v, "finalize")
    run(v, "prepare", {"algorithm": "asap", "layout": layout()})
    assert (v.state, v.algorithm, v.moved) == (PREPARED, "asap", ())


class Commands(RuleBasedStateMachine):
    """Any command in any order, each step failing or not: the state follows a simple model,
    only legal orders plan steps, and a refused or failed command changes nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.v = Vnm()
        self.model: Dict[str, Any] = {"state": IDLE, "alg": None, "moved": []}

    def attempt(self, command: str, body: Any, fails: bool) -> None:
        before = json.dumps(self.v.to_doc(), sort_keys=True)
        try:
            steps = self.v.plan(command, body)
        except VnmError:
            assert not self.legal(command, body)
            assert json.dumps(self.v.to_doc(), sort_keys=True) == before
            return
        assert self.legal(command, body), (command, body, self.model)
        assert steps or command == "status"
        if fails and not any(s.final for s in steps):  # a step failed: nothing is committed
            return
        self.v.commit(command, body)
        event(f"committed {command}, now {self.v.state}")
        m = self.model
        if command == "prepare":
            m.update(state=PREPARED, alg=body["algorithm"], moved=[])
        elif command == "migrate":
            m["moved"].append(body["host"])
        elif command == "finalize":
            m["state"] = FINALIZED

    def legal(self, command: str, body: Any) -> bool:
        m = self.model
        alg = (body or {}).get("algorithm")
        if command == "status":
            return True
        if command == "prepare":
            return m["state"] != PREPARED
        if m["state"] != PREPARED or (alg is not None and alg != m["alg"]):
            return False
        if command == "migrate":
            return body["host"] in HOSTS and body["host"] not in m["moved"]
        return sorted(m["moved"]) == sorted(HOSTS)

    FAILS = st.sampled_from([False, False, False, True])  # mostly not: reach every state

    @rule(alg=st.sampled_from(core.ALGORITHMS), fails=FAILS)
    def prepare(self, alg: str, fails: bool) -> None:
        self.attempt("prepare", {"algorithm": alg, "layout": layout()}, fails)

    @rule(host=st.sampled_from(["h1", "h2", "h1", "h2", "h3"]),
          alg=st.sampled_from([None, None, *core.ALGORITHMS]), fails=FAILS)
    def migrate(self, host: str, alg: Any, fails: bool) -> None:
        body = {"host": host} if alg is None else {"host": host, "algorithm": alg}
        self.attempt("migrate", body, fails)

    @rule(alg=st.sampled_from([None, None, *core.ALGORITHMS]), fails=FAILS)
    def finalize(self, alg: Any, fails: bool) -> None:
        self.attempt("finalize", None if alg is None else {"algorithm": alg}, fails)

    @precondition(lambda self: self.v.state != IDLE)
    @rule()
    def restart(self) -> None:
        self.v = Vnm.from_doc(json.loads(json.dumps(self.v.to_doc())))

    @invariant()
    def matches_the_model(self) -> None:
        assert (self.v.state, self.v.algorithm, list(self.v.moved)) == (
            self.model["state"], self.model["alg"], self.model["moved"])


TestCommands = Commands.TestCase
TestCommands.settings = settings(max_examples=150, stateful_step_count=20, deadline=None)


# -- carrying the steps out ---------------------------------------------------------------------------
def _runner(fail: Dict[str, int]) -> Any:
    """`do` for carry_out: fails the steps named in `fail` (kind or LIME op -> how many times)."""
    log: List[str] = []

    def do(step: core.Step) -> None:
        name = step.body["op"] if step.kind == "lime" else step.kind
        log.append(name)
        if fail.get(name, 0) > 0:
            fail[name] -= 1
            raise core.StepFailed(f"{name} said no")
    return do, log


def _prepared(algorithm: str = "alap") -> Vnm:
    v = Vnm()
    v.commit("prepare", {"algorithm": algorithm, "layout": layout()})
    return v


def test_carry_out_undoes_a_failed_prepare_newest_first() -> None:
    steps = Vnm().plan("prepare", {"algorithm": "alap", "layout": layout()})
    do, log = _runner({"ensemble": 1})
    out = core.carry_out(steps, do)
    assert not out.happened and out.errors == ["lime failed: ensemble said no"]
    assert log == ["patch", "ensemble", "unpatch"]  # LIME undid its ensemble itself


def test_carry_out_a_failed_patch_is_undone_too() -> None:
    steps = Vnm().plan("prepare", {"algorithm": "alap", "layout": layout()})
    do, log = _runner({"patch": 1})
    out = core.carry_out(steps, do)
    assert not out.happened and log == ["patch", "unpatch"]


def test_carry_out_reports_a_failed_undo_as_well() -> None:
    steps = Vnm().plan("prepare", {"algorithm": "alap", "layout": layout()})
    do, log = _runner({"ensemble": 1, "unpatch": 1})
    out = core.carry_out(steps, do)
    assert not out.happened and len(out.errors) == 2 and "undoing patch" in out.errors[1]


def test_carry_out_after_the_final_step_the_command_has_happened() -> None:
    v = _prepared()
    for h in HOSTS:
        v.commit("migrate", {"host": h})
    do, log = _runner({"unpatch": 1})
    out = core.carry_out(v.plan("finalize", {}), do)
    assert out.happened and out.errors == ["unpatch failed: unpatch said no"]
    assert log == ["retire_ensemble", "unpatch"]


def test_carry_out_a_refused_retire_keeps_the_promotion_and_finalize_can_be_repeated() -> None:
    v = _prepared("asap")
    for h in HOSTS:
        v.commit("migrate", {"host": h})
    do, log = _runner({"retire_ensemble": 1})
    out = core.carry_out(v.plan("finalize", {}), do)
    assert not out.happened and log == ["promote_ensemble", "retire_ensemble"]
    assert out.kept == ["promote_ensemble"]  # (LIME takes a repeated promotion as a no-op)
    assert v.state == PREPARED and core.carry_out(v.plan("finalize", {}), do).happened


def test_a_layout_may_tunnel_only_the_hosts_ports() -> None:
    doc = layout()
    doc["steps"][1] = dict(doc["steps"][1], ports={"1": 1}, tunnels={"2": [3, 3]})
    with pytest.raises(VnmError, match=r"only hosts' ports may be tunnelled .*port 2 of 0x12"):
        core.layout_from(doc)


def test_carry_out_all_well() -> None:
    do, log = _runner({})
    out = core.carry_out(_prepared().plan("migrate", {"host": "h1"}), do)
    assert out == core.Outcome(True, []) and log == ["move_host"]
