"""Two-phase rule updates (lime_shim.app, FLOW_MOD while migrating): the first half everywhere, a
barrier everywhere, `settle_s`, then the rule; the packets the first half raises are held until
then and forwarded by the rule as it is at that moment."""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, List, Tuple

import pytest

from experiments import ofbench as ob
from lime_shim import translate as tr
from sdnmig import compat
from tests.unit.test_lime_direct import OFP, PARSER, Bridge, flow_add, outputs
from tests.unit.test_lime_ports import two_instances


def flow_mods(dp: Bridge) -> List[Any]:
    return [m for m in dp.sent if isinstance(m, PARSER.OFPFlowMod)]


def barriers(dp: Bridge) -> List[Any]:
    return [m for m in dp.sent if isinstance(m, PARSER.OFPBarrierRequest)]


def packet_outs(dp: Bridge) -> List[Any]:
    return [m for m in dp.sent if isinstance(m, PARSER.OFPPacketOut)]


def answer(shim: Any, dp: Bridge) -> None:
    for req in barriers(dp):
        shim._barrier_reply(SimpleNamespace(msg=SimpleNamespace(datapath=dp, xid=req.xid)))


def first_half_packet_in(dp: Bridge, cookie: int, port: int = 1) -> Any:
    frame = ob.ethernet_frame(b"\x04" * 6, b"\x02" * 6)
    return PARSER.OFPPacketIn(dp, buffer_id=OFP.OFP_NO_BUFFER, total_len=len(frame),
                              reason=OFP.OFPR_ACTION, table_id=0, cookie=cookie,
                              match=PARSER.OFPMatch(in_port=port), data=frame)


def updating() -> Tuple[Any, Bridge, Bridge, List[Tuple[float, Callable[[], None]]]]:
    """Logical switch 1 on bridges 1 and 2; the app's rule in_port 1 -> port 3 sent, its first
    half on both bridges; what the shim asked to do later, kept (not run)."""
    shim, dp1, dp2, _ = two_instances()
    pending: List[Tuple[float, Callable[[], None]]] = []
    shim.later = lambda seconds, work: pending.append((seconds, work))
    shim.ldps[1].send_msg(flow_add(shim.ldps[1], 3))
    for dp in (dp1, dp2):
        (fm,) = flow_mods(dp)
        assert tr.form_of(fm.cookie) & tr.PHASE_ONE and outputs(fm) == [OFP.OFPP_CONTROLLER]
        assert len(barriers(dp)) == 1
    return shim, dp1, dp2, pending


def test_the_second_half_waits_for_every_barrier_and_then_the_settle_time():
    shim, dp1, dp2, pending = updating()
    answer(shim, dp1)
    assert pending == []  # bridge 2 has not answered
    answer(shim, dp2)
    ((seconds, work),) = pending
    assert seconds == shim.settle_s > 0
    assert [len(flow_mods(dp)) for dp in (dp1, dp2)] == [1, 1]  # nothing more until it settled
    work()
    for dp in (dp1, dp2):
        last = flow_mods(dp)[-1]
        assert not tr.form_of(last.cookie) & tr.PHASE_ONE and outputs(last) == [3]


def test_packets_the_first_half_raises_are_held_until_it_settled_then_forwarded_by_the_rule():
    shim, dp1, dp2, pending = updating()
    cookie = flow_mods(dp1)[0].cookie
    shim._packet_in(first_half_packet_in(dp1, cookie))  # before the barriers
    answer(shim, dp1)
    answer(shim, dp2)
    shim._packet_in(first_half_packet_in(dp1, cookie))  # while it settles
    assert packet_outs(dp1) == []
    ((_, work),) = pending
    work()
    outs = packet_outs(dp1)
    assert len(outs) == 2 and all(outputs(o) == [3] for o in outs)
    shim._packet_in(first_half_packet_in(dp1, cookie))  # late: forwarded at once
    assert len(packet_outs(dp1)) == 3


def test_an_instance_gone_before_its_barrier_leaves_the_rule_in_its_first_half_at_once():
    shim, dp1, dp2, pending = updating()
    cookie = flow_mods(dp1)[0].cookie
    shim._packet_in(first_half_packet_in(dp1, cookie))
    answer(shim, dp1)
    shim._state_change(SimpleNamespace(datapath=dp2, state=compat.DEAD_DISPATCHER))
    assert pending == []  # no settle: the update cannot complete
    assert len(flow_mods(dp1)) == 1  # still the first half: the shim forwards its packets
    assert [outputs(o) for o in packet_outs(dp1)] == [[3]]  # the held packet, by the rule


def completed(shim: Any, dps: Tuple[Bridge, ...], pending: List[Tuple[float, Any]]) -> None:
    """Every barrier answered and the settle time over."""
    for dp in dps:
        answer(shim, dp)
    pending.pop()[1]()


def test_a_first_half_of_a_goto_rule_sends_to_the_shim_only_which_forwards_by_both_tables():
    shim, dp1, dp2, pending = updating()
    completed(shim, (dp1, dp2), pending)
    ldp = shim.ldps[1]

    def add(table_id: int, priority: int, match: Any, out: int, goto: Any = None) -> None:
        insts = [PARSER.OFPInstructionActions(OFP.OFPIT_APPLY_ACTIONS,
                                              [PARSER.OFPActionOutput(out)])]
        if goto is not None:
            insts.append(PARSER.OFPInstructionGotoTable(goto))
        ldp.send_msg(PARSER.OFPFlowMod(ldp, table_id=table_id, priority=priority, match=match,
                                       instructions=insts))
    add(1, 5, PARSER.OFPMatch(), 2)
    completed(shim, (dp1, dp2), pending)
    add(0, 20, PARSER.OFPMatch(in_port=1), 3, goto=1)
    first = flow_mods(dp1)[-1]
    assert tr.form_of(first.cookie) & tr.PHASE_ONE
    assert [i.type for i in first.instructions] == [OFP.OFPIT_APPLY_ACTIONS]  # no goto
    completed(shim, (dp1, dp2), pending)
    shim._packet_in(first_half_packet_in(dp1, first.cookie))
    assert outputs(packet_outs(dp1)[-1]) == [3, 2]


def test_a_reinstall_while_a_rule_settles_keeps_it_in_its_first_half():
    shim, dp1, dp2, pending = updating()
    first = flow_mods(dp1)[0].cookie
    final = tr.shim_cookie(tr.serial_of(first))
    for dp in (dp1, dp2):
        answer(shim, dp)
    shim.reinstall(shim.map.logical(1))  # an operation's step, while the update settles
    assert not [m for dp in (dp1, dp2) for m in flow_mods(dp) if m.cookie == final]
    pending.pop()[1]()
    assert all(flow_mods(dp)[-1].cookie == final for dp in (dp1, dp2))


def test_a_failed_second_half_still_forwards_the_held_packets():
    shim, dp1, dp2, pending = updating()
    cookie = flow_mods(dp1)[0].cookie
    shim._packet_in(first_half_packet_in(dp1, cookie))
    for dp in (dp1, dp2):
        answer(shim, dp)
    install = shim._install

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a send failed")
    shim._install = broken
    with pytest.raises(RuntimeError):
        pending.pop()[1]()
    shim._install = install
    assert [outputs(o) for o in packet_outs(dp1)] == [[3]]
    assert (1, tr.serial_of(cookie)) not in shim.phase_wait
