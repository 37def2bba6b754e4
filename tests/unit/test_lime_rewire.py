"""A clone's neighbour rewire failing after the checks (lime_shim.operations, clone): every
neighbour rewired so far is put back, one by one, and the clone undone, so the refused operation
leaves the map and the bridges as they were. The shim is built without a platform; its bridges
answer barriers and flow-stats requests at once."""
from __future__ import annotations

import copy
from types import SimpleNamespace
from typing import Any

import pytest

from lime_shim.operations import Operations
from ryu_apps.roles.core import Role
from tests.unit.test_lime_direct import PARSER, Bridge, shim_with


def answering(shim: Any, dp: Bridge) -> Bridge:
    def answer(msg: Any) -> None:
        kind = type(msg).__name__
        if kind == "OFPBarrierRequest":
            reply = PARSER.OFPBarrierReply(dp)
        elif kind == "OFPFlowStatsRequest":
            reply = PARSER.OFPFlowStatsReply(dp, flags=0, body=[])
        else:
            return
        reply.xid = msg.xid
        (shim._barrier_reply if kind == "OFPBarrierRequest" else shim._stats_reply)(
            SimpleNamespace(msg=reply))
    dp.answer = answer
    return dp


def lab() -> tuple:
    """Switch 1 (ports 1, 2 to neighbours 3 and 4; 3 to the spare, hidden), spare 2 (ports 1, 2
    to the neighbours, 3 to switch 1), neighbours 3 and 4 (port 1 to switch 1, 2 to the spare,
    hidden; 3 a host)."""
    shim, dp1, _, _ = shim_with([1, 2, 3], hidden=[3])
    answering(shim, dp1)
    shim.spares = frozenset({2})
    shim.reserved.update({3: frozenset({2}), 4: frozenset({2})})
    for dpid in (2, 3, 4):
        dp = answering(shim, Bridge(dpid, [1, 2, 3]))
        shim.phys[dpid] = dp
        shim._role_changed(SimpleNamespace(datapath=dp, role=Role.MASTER, released=()))
    return shim, Operations(shim)


CLONE = {"op": "clone", "switch": 1, "onto": 2, "ports": {"1": 1, "2": 2},
         "neighbours": [[3, 1, 2], [4, 1, 2]]}


@pytest.mark.parametrize("fail_at", [1, 2, 3, 4])
def test_a_rewire_failing_at_any_step_puts_every_neighbour_back_and_undoes_the_clone(fail_at):
    shim, ops = lab()
    before = {d: copy.deepcopy(shim.map.logical(d).instances) for d in (1, 3, 4)}
    set_instance, calls = shim.map.set_instance, []

    def failing(dpid: int, inst: Any) -> None:
        calls.append(dpid)
        if len(calls) == fail_at:
            raise ValueError("the neighbour went away")
        set_instance(dpid, inst)
    shim.map.set_instance = failing
    with pytest.raises(ValueError, match="could not be rewired .*: clone undone"):
        ops.run(CLONE)
    shim.map.set_instance = set_instance
    assert {d: shim.map.logical(d).instances for d in (1, 3, 4)} == before
    assert shim.map.owner(2) is None and shim.links == {} and not shim.busy
    assert ops.run(CLONE)["instances"] == [1, 2]  # nothing left in the way of the same clone
    assert [link[:4] for link in shim.links[1]] == [[3, 1, 1, 2], [4, 1, 1, 2]]


def test_a_bug_in_a_rewire_is_undone_too_and_raised_as_it_is():
    shim, ops = lab()
    before = copy.deepcopy(shim.map.logical(3).instances)
    set_instance, bugs = shim.map.set_instance, [KeyError("a bug")]

    def buggy(dpid: int, inst: Any) -> None:
        if dpid == 4 and bugs:
            raise bugs.pop()
        set_instance(dpid, inst)
    shim.map.set_instance = buggy
    with pytest.raises(KeyError):
        ops.run(CLONE)
    shim.map.set_instance = set_instance
    assert shim.map.logical(3).instances == before and shim.map.owner(2) is None
