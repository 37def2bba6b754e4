"""Example tests for `RoleCore`: one or more per row of the state table in its docstring.

The core is pure, so each test drives it with explicit `now` values and checks the actions it
returns and the state it ends in. The switch is played by hand here; `test_roles_ovs_model.py`
plays it with a model of Open vSwitch.
"""
from __future__ import annotations

from typing import Any, List, Optional

import pytest

from ryu_apps.roles.core import (GEN_MASK, XID_BASE, Discard, Refused, Release, Role, RoleCore,
                                 SendRoleRequest, Settled, State)

#: What OVS reports as the generation_id before any controller set one.
UNDEFINED_GEN = GEN_MASK


def only_request(actions: List[Any]) -> SendRoleRequest:
    """The actions must be exactly one role request; return it."""
    assert len(actions) == 1, actions
    assert isinstance(actions[0], SendRoleRequest), actions
    return actions[0]


def querying(want: Role, now: float = 0.0, **kw: Any) -> "tuple[RoleCore, SendRoleRequest]":
    """A core that has just been told of a connection (so it has sent its NOCHANGE query)."""
    core = RoleCore(want=want, **kw)
    return core, only_request(core.connected(now))


def requesting(want: Role, gen: int = 7, now: float = 0.0, **kw: Any
               ) -> "tuple[RoleCore, SendRoleRequest]":
    """A core whose query was answered with `gen`, so it has sent ROLE_REQUEST(want)."""
    core, query = querying(want, now, **kw)
    return core, only_request(core.role_reply(now, query.xid, Role.EQUAL, gen))


def settled(want: Role, gen: int = 7, now: float = 0.0, **kw: Any) -> RoleCore:
    core, req = requesting(want, gen, now, **kw)
    actions = core.role_reply(now, req.xid, want, req.generation_id)
    assert actions == [Settled(want, req.generation_id)]
    return core


# -- construction ---------------------------------------------------------------------------------

def test_new_core_is_offline_with_no_role_and_nothing_pending() -> None:
    core = RoleCore(want=Role.MASTER)
    assert core.state is State.OFFLINE
    assert core.role is None and core.generation_id is None
    assert not core.is_master
    assert core.tick(100.0) == []


@pytest.mark.parametrize("role", [Role.NOCHANGE, 7])
def test_wanting_nochange_or_a_bogus_role_is_rejected(role: Any) -> None:
    """NOCHANGE is a query, not a role one can hold."""
    with pytest.raises(ValueError):
        RoleCore(want=role)
    core = RoleCore(want=Role.SLAVE)
    with pytest.raises(ValueError):
        core.set_want(0.0, role)


# -- OFFLINE --connected--> QUERYING --------------------------------------------------------------

def test_connected_sends_a_nochange_query_and_assumes_equal() -> None:
    """OVS makes every new connection EQUAL; the core asks for the generation_id first."""
    core = RoleCore(want=Role.MASTER)
    req = only_request(core.connected(10.0))
    assert req == SendRoleRequest(Role.NOCHANGE, 0, XID_BASE + 1)
    assert core.state is State.QUERYING
    assert core.role is Role.EQUAL


def test_xids_are_above_the_platform_counter_and_increase() -> None:
    core = RoleCore(want=Role.SLAVE)
    xids = [only_request(core.connected(float(t))).xid for t in range(5)]
    assert xids == [XID_BASE + n for n in range(1, 6)]


# -- QUERYING --reply--> REQUESTING ---------------------------------------------------------------

def test_query_reply_makes_a_master_request_with_the_next_generation() -> None:
    core, query = querying(Role.MASTER)
    req = only_request(core.role_reply(0.5, query.xid, Role.EQUAL, 41))
    assert (req.role, req.generation_id) == (Role.MASTER, 42)
    assert req.xid != query.xid
    assert core.state is State.REQUESTING
    assert core.generation_id == 41


def test_query_reply_makes_a_slave_request_with_the_same_generation() -> None:
    core, query = querying(Role.SLAVE)
    req = only_request(core.role_reply(0.5, query.xid, Role.EQUAL, 41))
    assert (req.role, req.generation_id) == (Role.SLAVE, 41)
    assert core.state is State.REQUESTING


def test_query_reply_makes_an_equal_request_with_the_same_generation() -> None:
    core, query = querying(Role.EQUAL)
    req = only_request(core.role_reply(0.5, query.xid, Role.EQUAL, 41))
    assert (req.role, req.generation_id) == (Role.EQUAL, 41)


def test_undefined_generation_makes_a_master_request_wrap_to_zero() -> None:
    """OVS reports 2**64-1 before any generation_id was set; +1 must wrap within 64 bits."""
    core, query = querying(Role.MASTER)
    req = only_request(core.role_reply(0.0, query.xid, Role.EQUAL, UNDEFINED_GEN))
    assert req.generation_id == 0


def test_undefined_generation_is_echoed_by_a_slave_request() -> None:
    core, query = querying(Role.SLAVE)
    req = only_request(core.role_reply(0.0, query.xid, Role.EQUAL, UNDEFINED_GEN))
    assert req.generation_id == UNDEFINED_GEN


def test_generation_ids_are_kept_to_64_bits() -> None:
    core, query = querying(Role.SLAVE)
    core.role_reply(0.0, query.xid, Role.EQUAL, (1 << 64) + 5)
    assert core.generation_id == 5


# -- REQUESTING --reply(role=want)--> SETTLED -----------------------------------------------------

def test_master_confirmed_settles_and_releases_held_packet_ins_in_order() -> None:
    core, req = requesting(Role.MASTER, gen=3)
    assert [core.packet_in(1.0, m) for m in ("a", "b", "c")] == [False] * 3
    actions = core.role_reply(1.5, req.xid, Role.MASTER, 4)
    assert actions == [Settled(Role.MASTER, 4), Release(("a", "b", "c"))]
    assert core.state is State.SETTLED and core.is_master
    assert not core.held


def test_slave_confirmed_settles_and_discards_held_packet_ins() -> None:
    """The master answered those: the switch sent them to every MASTER/EQUAL connection."""
    core, req = requesting(Role.SLAVE, gen=3)
    core.packet_in(1.0, "a")
    core.packet_in(1.0, "b")
    actions = core.role_reply(1.5, req.xid, Role.SLAVE, 3)
    assert len(actions) == 2
    assert actions[0] == Settled(Role.SLAVE, 3)
    assert isinstance(actions[1], Discard) and actions[1].count == 2
    assert "SLAVE" in actions[1].why
    assert core.state is State.SETTLED and not core.is_master and not core.held


def test_settling_with_nothing_held_only_reports_the_role() -> None:
    core, req = requesting(Role.MASTER, gen=0)
    assert core.role_reply(1.0, req.xid, Role.MASTER, 1) == [Settled(Role.MASTER, 1)]


def test_settled_master_admits_packet_ins_and_settled_slave_refuses_them() -> None:
    master, slave = settled(Role.MASTER), settled(Role.SLAVE)
    assert master.packet_in(2.0, "x") is True
    assert slave.packet_in(2.0, "x") is False
    assert not master.held and not slave.held


def test_settled_equal_refuses_packet_ins() -> None:
    """EQUAL gets packet-ins from the switch, but only the MASTER answers them here."""
    core = settled(Role.EQUAL)
    assert core.packet_in(2.0, "x") is False and not core.held


# -- REQUESTING --reply(other role)--> QUERYING ---------------------------------------------------

def test_reply_with_another_role_than_requested_queries_again() -> None:
    core, req = requesting(Role.MASTER, gen=3)
    core.packet_in(1.0, "held")
    query = only_request(core.role_reply(1.0, req.xid, Role.SLAVE, 9))
    assert query.role is Role.NOCHANGE and query.xid != req.xid
    assert core.state is State.QUERYING
    assert list(core.held) == ["held"], "still negotiating: keep holding"


# -- REQUESTING --STALE--> QUERYING ---------------------------------------------------------------

def test_stale_error_queries_again_then_uses_the_newer_generation() -> None:
    core, req = requesting(Role.MASTER, gen=3)
    query = only_request(core.role_error_stale(1.0, req.xid))
    assert query.role is Role.NOCHANGE and query.xid != req.xid
    assert core.state is State.QUERYING
    again = only_request(core.role_reply(1.1, query.xid, Role.EQUAL, 10))
    assert (again.role, again.generation_id) == (Role.MASTER, 11)


def test_stale_error_with_an_unknown_xid_is_ignored() -> None:
    core, req = requesting(Role.MASTER)
    assert core.role_error_stale(1.0, req.xid + 1000) == []
    assert core.state is State.REQUESTING


# -- QUERYING / REQUESTING --deadline--> QUERYING -------------------------------------------------

def test_no_reply_to_the_query_before_the_deadline_asks_again_with_a_new_xid() -> None:
    core, query = querying(Role.MASTER, now=100.0, timeout=3.0)
    assert core.tick(102.9) == []
    retry = only_request(core.tick(103.0))
    assert retry.role is Role.NOCHANGE and retry.xid != query.xid
    assert core.state is State.QUERYING
    assert core.tick(105.9) == [], "the retry has a deadline of its own"
    assert only_request(core.tick(106.0)).xid != retry.xid


def test_no_reply_to_the_request_before_the_deadline_asks_again() -> None:
    core, req = requesting(Role.SLAVE, now=50.0, timeout=2.0)
    assert core.tick(51.0) == []
    retry = only_request(core.tick(52.5))
    assert retry.role is Role.NOCHANGE and retry.xid != req.xid
    assert core.state is State.QUERYING


def test_tick_does_nothing_once_settled() -> None:
    core = settled(Role.MASTER)
    assert core.tick(1e9) == []
    assert core.state is State.SETTLED


# -- SETTLED --set_want--> REQUESTING -------------------------------------------------------------

def test_set_want_master_from_settled_slave_requests_master_with_next_generation() -> None:
    core = settled(Role.SLAVE, gen=20)
    req = only_request(core.set_want(5.0, Role.MASTER))
    assert (req.role, req.generation_id) == (Role.MASTER, 21)
    assert core.state is State.REQUESTING and core.want is Role.MASTER
    assert core.packet_in(5.1, "p") is False and list(core.held) == ["p"]
    assert core.role_reply(5.2, req.xid, Role.MASTER, 21) == [Settled(Role.MASTER, 21),
                                                              Release(("p",))]


def test_set_want_slave_from_settled_master_requests_slave_with_same_generation() -> None:
    core = settled(Role.MASTER, gen=20)  # settled at generation 21
    req = only_request(core.set_want(5.0, Role.SLAVE))
    assert (req.role, req.generation_id) == (Role.SLAVE, 21)
    assert core.state is State.REQUESTING and not core.is_master


def test_set_want_to_the_role_already_held_sends_nothing() -> None:
    core = settled(Role.MASTER)
    assert core.set_want(5.0, Role.MASTER) == []
    assert core.state is State.SETTLED


def test_set_want_while_offline_is_used_at_the_next_connection() -> None:
    core = RoleCore(want=Role.SLAVE)
    assert core.set_want(0.0, Role.MASTER) == []
    query = only_request(core.connected(1.0))
    req = only_request(core.role_reply(1.0, query.xid, Role.EQUAL, 4))
    assert (req.role, req.generation_id) == (Role.MASTER, 5)


def test_set_want_while_querying_is_used_when_the_query_is_answered() -> None:
    core, query = querying(Role.SLAVE)
    assert core.set_want(0.5, Role.MASTER) == []
    req = only_request(core.role_reply(1.0, query.xid, Role.EQUAL, 4))
    assert (req.role, req.generation_id) == (Role.MASTER, 5)


def _answer_like_a_switch(core: RoleCore, first: List[Any], now: float,
                          role: Optional[Role] = None) -> None:
    """Answer every role request the core sends (and the earlier in-flight one) as OVS would,
    with no competing controller: every request is accepted, in order."""
    gen, current = 4, role
    inflight = list(first)
    for _ in range(20):
        if not inflight:
            return
        req = inflight.pop(0)
        if req.role is not Role.NOCHANGE:
            gen, current = req.generation_id, req.role
        for action in core.role_reply(now, req.xid, current, gen):
            if isinstance(action, SendRoleRequest):
                inflight.append(action)
    raise AssertionError("the core kept sending role requests")


def test_set_want_while_requesting_is_honoured() -> None:
    """BUG: a role wanted while a request for another role is in flight is silently lost.

    The slave's SLAVE request is in flight when the instance is told to become MASTER (what a
    mastership hand-over does to a freshly reconnected standby). The reply confirms SLAVE, which
    the core compares with the *request* (pending.role), not with `want` as its state table says
    ("reply to our request, role=want"), so it settles as SLAVE and never asks for MASTER: the
    switch is left with no master.
    """
    core, slave_req = requesting(Role.SLAVE, gen=4)
    out = core.set_want(1.0, Role.MASTER)
    _answer_like_a_switch(core, [slave_req] + out, 1.5, role=Role.EQUAL)
    assert core.want is Role.MASTER
    assert core.state is State.SETTLED
    assert core.role is Role.MASTER, "settled as SLAVE although MASTER is wanted"


def test_set_want_slave_while_requesting_master_is_honoured() -> None:
    """BUG (same cause): asked to step down while its MASTER request is in flight, the core
    settles as MASTER and stays master although it wants SLAVE."""
    core, master_req = requesting(Role.MASTER, gen=4)
    out = core.set_want(1.0, Role.SLAVE)
    _answer_like_a_switch(core, [master_req] + out, 1.5, role=Role.EQUAL)
    assert core.state is State.SETTLED
    assert core.role is Role.SLAVE, "settled as MASTER although SLAVE is wanted"


# -- SETTLED --ROLE_STATUS(SLAVE)--> SETTLED(SLAVE) -----------------------------------------------

def test_role_status_slave_demotes_a_settled_master_and_it_stops_wanting_master() -> None:
    """Never fight a new master: a later reconnection must ask for SLAVE, not MASTER."""
    core = settled(Role.MASTER, gen=7)
    actions = core.role_status(3.0, Role.SLAVE, 9)
    assert actions == [Settled(Role.SLAVE, 9, by_status=True)]
    assert core.want is Role.SLAVE and core.role is Role.SLAVE
    assert core.state is State.SETTLED and not core.is_master
    assert core.packet_in(3.1, "x") is False
    core.disconnected(4.0)
    query = only_request(core.connected(5.0))
    req = only_request(core.role_reply(5.0, query.xid, Role.EQUAL, 9))
    assert (req.role, req.generation_id) == (Role.SLAVE, 9)


def test_role_status_while_negotiating_records_it_and_waits_for_the_reply() -> None:
    core, query = querying(Role.MASTER)
    core.packet_in(0.1, "held")
    assert core.role_status(0.2, Role.SLAVE, 12) == []
    assert core.want is Role.SLAVE and core.generation_id == 12
    assert core.state is State.QUERYING and list(core.held) == ["held"]
    req = only_request(core.role_reply(0.3, query.xid, Role.SLAVE, 12))
    assert (req.role, req.generation_id) == (Role.SLAVE, 12)


def test_role_status_other_than_slave_does_not_change_want() -> None:
    core = settled(Role.SLAVE)
    assert core.role_status(1.0, Role.EQUAL, 3) == [Settled(Role.EQUAL, 3, by_status=True)]
    assert core.want is Role.SLAVE


# -- any --unknown xid--> ignore ------------------------------------------------------------------

def test_late_reply_to_a_retried_query_is_ignored() -> None:
    core, first = querying(Role.MASTER, timeout=1.0)
    retry = only_request(core.tick(1.0))
    assert core.role_reply(1.1, first.xid, Role.EQUAL, 99) == []
    assert core.state is State.QUERYING and core.generation_id is None
    req = only_request(core.role_reply(1.2, retry.xid, Role.EQUAL, 5))
    assert req.generation_id == 6


def test_late_reply_after_settling_is_ignored() -> None:
    core, req = requesting(Role.MASTER, gen=1)
    core.role_reply(1.0, req.xid, Role.MASTER, 2)
    assert core.role_reply(1.1, req.xid, Role.SLAVE, 5) == []
    assert core.role_error_stale(1.1, req.xid) == []
    assert core.is_master and core.generation_id == 2


def test_replies_while_offline_are_ignored() -> None:
    core = RoleCore(want=Role.MASTER)
    assert core.role_reply(0.0, XID_BASE + 1, Role.MASTER, 1) == []
    assert core.role_error_stale(0.0, XID_BASE + 1) == []
    core2, query = querying(Role.MASTER)
    core2.disconnected(1.0)
    assert core2.role_reply(1.1, query.xid, Role.EQUAL, 1) == []
    assert core2.state is State.OFFLINE


# -- any --disconnected--> OFFLINE ----------------------------------------------------------------

@pytest.mark.parametrize("stage", ["querying", "requesting"])
def test_disconnect_while_negotiating_discards_held_packet_ins(stage: str) -> None:
    core, _ = querying(Role.MASTER) if stage == "querying" else requesting(Role.MASTER)
    core.packet_in(1.0, "a")
    core.packet_in(1.0, "b")
    actions = core.disconnected(2.0)
    assert len(actions) == 1 and isinstance(actions[0], Discard) and actions[0].count == 2
    assert core.state is State.OFFLINE and core.role is None and not core.held
    assert core.tick(100.0) == [], "no request is pending any more"


def test_disconnect_with_nothing_held_returns_nothing_and_keeps_the_generation() -> None:
    core = settled(Role.MASTER, gen=7)
    assert core.disconnected(2.0) == []
    assert core.state is State.OFFLINE and not core.is_master
    assert core.generation_id == 8


# -- packet-ins while not settled -----------------------------------------------------------------

def test_packet_ins_while_offline_are_held_and_released_by_the_next_settle() -> None:
    """The platform may deliver a packet-in before it announces the connection."""
    core = RoleCore(want=Role.MASTER)
    assert core.packet_in(0.0, "early") is False
    query = only_request(core.connected(0.1))
    req = only_request(core.role_reply(0.2, query.xid, Role.EQUAL, 0))
    assert core.role_reply(0.3, req.xid, Role.MASTER, 1) == [Settled(Role.MASTER, 1),
                                                             Release(("early",))]


def test_hold_limit_overflow_drops_the_oldest_and_counts_it() -> None:
    core, req = requesting(Role.MASTER, hold_limit=3)
    for m in range(5):
        assert core.packet_in(1.0, m) is False
    assert list(core.held) == [2, 3, 4]
    assert core.overflowed == 2
    actions = core.role_reply(1.0, req.xid, Role.MASTER, 8)
    assert actions[1] == Release((2, 3, 4))
    assert core.overflowed == 2


def test_reconnect_renegotiates_from_scratch() -> None:
    core = settled(Role.MASTER, gen=1)
    core.disconnected(1.0)
    assert core.packet_in(1.1, "x") is False
    query = only_request(core.connected(2.0))
    assert query.role is Role.NOCHANGE
    assert core.state is State.QUERYING and core.role is Role.EQUAL
    assert not core.is_master


# -- fenced requests (migrations) -------------------------------------------------------------------

def test_exact_generation_request_uses_that_generation() -> None:
    core = settled(Role.EQUAL, gen=7)
    req = only_request(core.set_want(1.0, Role.MASTER, generation_id=12, fenced=True))
    assert (req.role, req.generation_id, req.fenced) == (Role.MASTER, 12, True)
    assert core.state is State.REQUESTING
    assert core.role_reply(1.1, req.xid, Role.MASTER, 12) == [Settled(Role.MASTER, 12)]


def test_fenced_request_refused_as_stale_is_not_retried_and_keeps_the_role() -> None:
    core = settled(Role.EQUAL, gen=7)
    req = only_request(core.set_want(1.0, Role.MASTER, generation_id=8, fenced=True))
    assert core.role_error_stale(1.1, req.xid) == [Refused(Role.MASTER, 8)]
    assert core.state is State.SETTLED and core.role is Role.EQUAL and core.want is Role.EQUAL
    assert core.tick(100.0) == []


def test_fenced_request_without_answer_is_sent_again_with_the_same_generation() -> None:
    core = settled(Role.EQUAL, gen=7, timeout=1.0)
    req = only_request(core.set_want(1.0, Role.MASTER, generation_id=8, fenced=True))
    again = only_request(core.tick(2.5))
    assert (again.role, again.generation_id, again.fenced) == (Role.MASTER, 8, True)
    assert again.xid != req.xid
    assert core.role_reply(2.6, req.xid, Role.MASTER, 8) == []  # the old xid is ignored


def test_fenced_needs_a_generation_and_a_known_connection() -> None:
    core = settled(Role.SLAVE)
    with pytest.raises(ValueError):
        core.set_want(1.0, Role.MASTER, fenced=True)
    offline = RoleCore(want=Role.SLAVE)
    with pytest.raises(ValueError):
        offline.set_want(1.0, Role.MASTER, generation_id=3)
