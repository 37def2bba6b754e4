"""LIME merging: one packet-in stream, one barrier answer, counters that never go back, ports
reported once, and timeouts the shim keeps for the instances."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lime_shim.merge import Counters, Dedupe, Join, PortStates
from lime_shim.timeouts import HARD, IDLE, Timeouts


def test_dedupe_drops_the_same_packet_from_another_instance_only_inside_the_window():
    d = Dedupe(window=0.05)
    assert d.admit(0.0, 3, 1, b"pkt")
    assert not d.admit(0.01, 0x103, 1, b"pkt")  # the same packet reported by the clone
    assert d.admit(0.02, 3, 1, b"pkt")           # a second packet from the same instance
    assert d.admit(0.02, 0x103, 2, b"pkt")       # another logical port: another packet
    assert d.admit(0.2, 0x103, 1, b"pkt")        # long after: a new packet
    assert d.dropped == 1


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.01, 0.03, 0.06]), st.sampled_from([3, 0x103]),
                          st.integers(1, 2), st.sampled_from([b"a", b"b"])), max_size=30))
def test_dedupe_drops_exactly_what_another_instance_reported_last_within_the_window(events):
    d = Dedupe(window=0.05)
    admitted = []  # (time, instance, port, data): the reference model
    now = 0.0
    for dt, pdpid, lport, data in events:
        now += dt
        same = [a for a in admitted if a[2:] == (lport, data) and now - a[0] <= 0.05]
        want = not same or same[-1][1] == pdpid
        assert d.admit(now, pdpid, lport, data) == want
        if want:
            admitted.append((now, pdpid, lport, data))


def test_a_barrier_is_answered_once_after_every_instance():
    j = Join()
    j.start(7, [3, 0x103])
    assert j.answer(7, 3) is None
    assert j.answer(7, 3) is None            # a repeat from the same instance changes nothing
    assert j.answer(7, 0x103) == {3: [], 0x103: []}
    assert j.answer(7, 0x103) is None        # late: already answered
    with pytest.raises(ValueError):
        j.start(8, [])


def test_multipart_answers_are_joined_and_a_lost_instance_ends_its_requests():
    j = Join()
    j.start(1, [3, 0x103])
    assert j.answer(1, 3, "a", more=True) is None
    assert j.answer(1, 0x103, "c") is None
    assert j.answer(1, 3, "b") == {3: ["a", "b"], 0x103: ["c"]}
    j.start(2, [3, 0x103])
    j.start(3, [3])
    assert j.answer(2, 3) is None
    assert j.instance_lost(0x103) == [2]
    assert j.answer(2, 0x103) is None
    assert j.answer(3, 3) == {3: []}
    j.start(4, [3])
    with pytest.raises(ValueError, match="already waiting"):
        j.start(4, [3])


def test_counters_sum_instances_and_keep_what_retired_copies_counted():
    c = Counters()
    assert c.total("r1", [(10, 1000), (5, 500)]) == (15, 1500)
    c.fold("r1", (5, 500))                     # the clone's copy is removed after a poll
    assert c.total("r1", [(12, 1200)]) == (17, 1700)
    c.fold("r1", (12, 1200))                   # the original retired too
    assert c.total("r1", [(0, 0)]) == (17, 1700)
    assert c.total("r1", [(1, 60)]) == (18, 1760)
    c.forget("r1")
    assert c.total("r1", [(1, 60)]) == (1, 60)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("grow"), st.integers(0, 2), st.integers(0, 5)),
                          st.tuples(st.just("retire"), st.integers(0, 2), st.booleans())),
                max_size=40))
def test_counters_never_go_back(steps):
    """Copies count up; a copy is removed, its last *polled* reading folded (what it counted
    since that poll is lost to the count, never subtracted); the total never decreases."""
    c = Counters()
    live = [0, 0, 0]
    polled = [0, 0, 0]
    last = 0
    for kind, i, x in steps:
        if kind == "grow":
            live[i] += x
        else:
            c.fold("k", (polled[i] if x else live[i],))
            live[i] = polled[i] = 0
        (t,) = c.total("k", [(v,) for v in live]) or (0,)
        polled = list(live)
        assert t >= last
        last = t


def test_a_port_down_on_any_instance_is_reported_once():
    p = PortStates()
    assert p.update(1, 3, False) is False
    assert p.update(1, 0x103, False) is None    # down on the clone too: already reported
    assert p.update(1, 3, True) is None         # still down on the clone
    assert p.update(1, 0x103, True) is True
    assert p.update(1, 0x103, True) is None
    assert p.update(2, 0x103, False) is False
    assert p.instance_gone(0x103) == [(2, True)]


def test_idle_and_hard_timeouts_expire_from_polled_counts_never_early():
    t = Timeouts()
    t.add(1, idle=2, hard=0, now=0.0)
    t.add(2, idle=0, hard=3, now=0.0)
    t.add(3, idle=0, hard=0, now=0.0)          # no timeout: not kept
    assert t.poll(1.0, {1: 5, 2: 0}) == []
    assert t.poll(1.9, {1: 6, 2: 0}) == []     # rule 1 active at 1.9
    assert t.poll(3.0, {1: 6, 2: 9}) == [(2, HARD)]
    assert t.poll(3.8, {1: 6}) == []           # idle since 1.9: not yet 2 s
    assert t.poll(3.9, {1: 6}) == [(1, IDLE)]
    assert t.poll(9.0, {1: 6}) == []           # expired once
    t.add(4, idle=1, hard=0, now=10.0)
    t.forget(4)
    assert t.poll(20.0, {4: 0}) == []
    with pytest.raises(ValueError):
        t.add(5, idle=-1, hard=0, now=0.0)


def test_a_rule_busy_since_it_was_added_is_not_idle_at_its_first_poll():
    t = Timeouts()
    t.add(1, idle=2, hard=0, now=0.0)
    assert t.poll(2.5, {1: 500}) == []          # counted packets: active at some time up to 2.5
    assert t.poll(4.4, {1: 500}) == []
    assert t.poll(4.5, {1: 500}) == [(1, IDLE)]
    t.add(2, idle=2, hard=0, now=0.0)
    assert t.poll(2.0, {2: 0}) == [(2, IDLE)]   # never used: idle since it was added
