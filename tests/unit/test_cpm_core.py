"""The control-path migration protocol (hypervisor.migration) in a simulated world: a tenant, the
proxy's route, the initial and the target instance, and a switch, joined by FIFO connections
whose deliveries hypothesis interleaves at will, with the switch emitting packet-ins, time
passing (deadlines), and the target or the initial crashing at any step.

Checked: with no failure, every tenant request runs on the switch exactly once and in order,
the tenant gets every reply and every packet-in exactly once and in order, and the target ends
serving. When the target fails (crash, or a deadline) the initial ends serving and every
request runs, exactly once if the target had not yet seen the marker (afterwards its flushed
requests may run twice: the documented window). When the initial crashes the target completes,
and what the tenant sent after the switch-over runs exactly once, in order. Whatever happens,
the tenant never gets a message twice or out of order, except a reply to a request the switch
ran twice."""
from __future__ import annotations

from collections import deque
from typing import Any, Deque, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hypervisor import migration as m

MID = "m1"
REQUESTS = 6


class World:
    """Everything joined by FIFO connections named (from, to)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.route = m.Route()
        self.initial: Optional[m.Initial] = m.Initial()
        self.target: Optional[m.Target] = m.Target(MID)
        self.chan: Dict[Tuple[str, str], Deque[Any]] = {
            k: deque() for k in [("t", "p"), ("p", "t"), ("p", "i"), ("i", "p"), ("p", "T"),
                                 ("T", "p"), ("i", "s"), ("s", "i"), ("T", "s"), ("s", "T")]}
        self.async_to = {"i"}            # switch connections that get asynchronous messages
        self.executed: List[int] = []    # tenant requests, in the order the switch ran them
        self.got: List[Tuple[str, int]] = []   # what the tenant received
        self.sent = 0
        self.pins = 0
        self.target_ready_pending = False
        self.marked_target = False       # the target saw its marker (it has flushed)
        self.crashed: Optional[str] = None
        self.crash_state: Optional[str] = None
        self.switched_at: Optional[int] = None   # the first request the proxy logged
        self.tenant_closed = False
        self.target.begin(self.now)      # ConnectSwitch: the switch accepts at once
        self.async_to.add("T")
        self.target_ready_pending = True

    # -- effects ---------------------------------------------------------------------------------
    def run(self, who: str, effects: List[Any]) -> None:
        for e in effects:
            if isinstance(e, m.ToSwitch):
                self.chan[(who, "s")].append(e.msg)
            elif isinstance(e, m.ToProxy):
                self.chan[(who, "p")].append(e.msg)
            elif isinstance(e, m.ToInitial):   # to a crashed one: the socket is gone
                if self.initial is not None:
                    self.chan[("p", "i")].append(e.msg)
            elif isinstance(e, m.ToTarget):
                if self.target is not None:
                    self.chan[("p", "T")].append(e.msg)
            elif isinstance(e, m.ToTenant):
                self.chan[("p", "t")].append(e.msg)
            elif isinstance(e, m.StopServing):   # what it sent the switch still runs
                if who == "T":
                    self.target_ready_pending = False
                self.async_to.discard(who)
                self.chan[("s", who)].clear()
            elif isinstance(e, m.CloseTenant):
                self.tenant_closed = True
            else:
                raise AssertionError(f"unexpected effect {e!r}")

    # -- steps -----------------------------------------------------------------------------------
    def steps(self) -> List[str]:
        out = [f"{a}>{b}" for (a, b), q in self.chan.items() if q]
        if self.target_ready_pending and self.target is not None:
            out.append("ready")
        if self.sent < REQUESTS and not self.tenant_closed:
            out.append("send")
        if self.pins < 8:
            out.append("pin")
        return sorted(out)

    def step(self, what: str) -> None:
        if what == "ready":
            self.target_ready_pending = False
            self.run("T", self.target.switch_ready(self.now))
        elif what == "send":
            self.sent += 1
            self.chan[("t", "p")].append(("req", self.sent))
        elif what == "pin":
            self.pins += 1
            for c in sorted(self.async_to):
                self.chan[("s", c)].append(("pin", self.pins))
        else:
            a, b = what.split(">")
            self.deliver(a, b, self.chan[(a, b)].popleft())

    def deliver(self, a: str, b: str, msg: Any) -> None:
        now = self.now
        if b == "p":
            if a == "t":
                if self.route.state != m.DIRECT and self.switched_at is None:
                    self.switched_at = msg[1]
                self.run("p", self.route.from_tenant(msg, now))
            elif a == "i":
                self.run("p", self.route.from_initial(msg, now))
            else:
                self.run("p", self.route.from_target(msg, now))
        elif b == "t":
            self.got.append(msg)
        elif b == "s":
            self.switch(a, msg)
        elif b == "i":
            inst = self.initial
            if a == "p":
                self.run("i", inst.from_proxy(msg, now))
            else:
                self.run("i", self.from_switch(inst, msg))
        else:
            t = self.target
            if a == "p":
                self.run("T", t.from_proxy(msg, now))
            else:
                if msg == ("marker", MID) and t.state in (m.ASKING, m.MARKING):
                    self.marked_target = True
                self.run("T", self.from_switch(t, msg))

    def from_switch(self, inst: Any, msg: Any) -> List[Any]:
        if msg[0] == "marker":
            return inst.marker(msg[1], self.now)
        if msg[0] == "barrier":
            return inst.barrier_reply(msg[1], self.now)
        return inst.from_switch(msg, self.now)

    def switch(self, conn: str, msg: Any) -> None:
        """Open vSwitch, as the protocol sees it: requests run in each connection's order."""
        alive = (self.target if conn == "T" else self.initial) is not None
        if isinstance(msg, m.Barrier):
            if alive:
                self.chan[("s", conn)].append(("barrier", msg))
        elif isinstance(msg, m.MarkDelete):  # FLOW_REMOVED to every connection taking async
            for c in sorted(self.async_to):
                self.chan[("s", c)].append(("marker", msg.mid))
        elif isinstance(msg, m.MarkAdd):
            pass
        else:
            self.executed.append(msg[1])
            if alive:   # a dead instance's request still runs; its reply goes nowhere
                self.chan[("s", conn)].append(("rep", msg[1]))

    def crash(self, who: str) -> None:
        """An instance dies: its connections close; the switch and the proxy notice."""
        self.crashed = who
        # the proxy had the target's COMMITTED: the replay log was dropped
        self.crash_state = ("done" if self.route.serving == "target" else
                            "committed" if self.route.committed else None)
        if who == "T":
            if self.target.state in (m.COMMITTING, m.ACTIVE):
                self.marked_target = True
            self.target = None
            self.target_ready_pending = False
        else:
            self.initial = None
        self.async_to.discard(who)
        for k in list(self.chan):   # what it had sent the switch may still run
            if who in k and k != (who, "s"):
                self.chan[k].clear()
        self.run("p", self.route.lost("target" if who == "T" else "initial", self.now))

    def tick(self, dt: float) -> None:
        self.now += dt
        if self.target is not None:
            self.run("T", self.target.tick(self.now))
        self.run("p", self.route.tick(self.now))

    def quiesce(self) -> None:
        """Deliver everything, oldest connection first; let deadlines pass when stuck."""
        for _ in range(10_000):
            steps = [s for s in self.steps() if s not in ("pin",)]
            if not steps:
                if self.settled():
                    return
                self.tick(m.DEADLINE_S)
                if not [s for s in self.steps() if s != "pin"] and not self.settled():
                    raise AssertionError(f"stuck: {self.describe()}")
                continue
            self.step(steps[0])
        raise AssertionError(f"no quiescence: {self.describe()}")

    @property
    def late(self) -> bool:
        return self.route.late

    def settled(self) -> bool:
        return self.route.state == m.DIRECT and (self.target is None or self.target.state in (
            m.ACTIVE, m.FAILED)) and self.sent == REQUESTS or self.tenant_closed

    def describe(self) -> str:
        return (f"route={self.route.state}/{self.route.serving} "
                f"initial={self.initial and self.initial.state} "
                f"target={self.target and self.target.state} executed={self.executed} "
                f"got={self.got}")


def _in_order_once(xs: List[int]) -> bool:
    return xs == sorted(set(xs))


def check(w: World) -> None:
    reps = [n for kind, n in w.got if kind == "rep"]
    pins = [n for kind, n in w.got if kind == "pin"]
    if w.crashed is None and w.target is not None and w.target.state == m.ACTIVE:
        assert w.executed == list(range(1, REQUESTS + 1)), w.describe()
        if w.late:  # the initial handed over after the proxy's deadline: whole, maybe reordered
            assert sorted(reps) == list(range(1, REQUESTS + 1)), w.describe()
            assert sorted(pins) == list(range(1, w.pins + 1)), w.describe()
        else:
            assert reps == list(range(1, REQUESTS + 1)), w.describe()
            assert pins == list(range(1, w.pins + 1)), w.describe()
        assert w.route.serving == "target" and w.initial.state == m.RELEASED, w.describe()
        assert w.route.log == [] and w.route.held == [], w.describe()
        return
    if w.crashed == "i":
        if w.target.state == m.FAILED:   # it gave up too (a deadline): nobody left to serve
            if w.route.serving == "initial":  # before it asked: the route keeps what comes
                assert w.route.initial_gone and w.route.log, w.describe()   # for the next one
                assert w.route.log[-1] == ("req", REQUESTS), w.describe()
            else:
                assert w.tenant_closed and w.route.serving == "none", w.describe()
            return
        # the target completes; what the proxy logged for it runs once, in order
        assert w.target.state == m.ACTIVE and w.route.serving == "target", w.describe()
        assert _in_order_once(pins), w.describe()
        if w.switched_at is not None:
            after = [n for n in w.executed if n >= w.switched_at]
            assert after == list(range(w.switched_at, REQUESTS + 1)), w.describe()
        assert _in_order_once(reps), w.describe()
        return
    if w.crash_state == "done":  # after the migration: the tenant has lost its hypervisor
        assert w.tenant_closed and w.route.serving == "none", w.describe()
        assert _in_order_once(w.executed) and _in_order_once(reps), w.describe()
        return
    # the target failed (crashed, or gave up at a deadline): the initial serves again
    assert w.route.serving == "initial" and w.initial.state == m.SERVING, w.describe()
    assert w.route.log == [] and w.route.held == [], w.describe()
    if w.crash_state == "committed":  # what it had not yet sent is lost with it, nothing runs
        assert _in_order_once(w.executed), w.describe()   # twice; switch messages around the
        assert _in_order_once(reps), w.describe()         # initial's resume may come twice
    elif not w.marked_target:
        assert w.executed == list(range(1, REQUESTS + 1)), w.describe()
        assert reps == list(range(1, REQUESTS + 1)), w.describe()
        assert _in_order_once(pins), w.describe()
    else:  # the documented window: flushed requests (and switch messages) may come twice
        assert set(w.executed) == set(range(1, REQUESTS + 1)), w.describe()


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_interleaving_keeps_the_tenant_whole(data: st.DataObject) -> None:
    w = World()
    crash = data.draw(st.sampled_from([None, "T", "i"]), label="who crashes")
    crash_in = data.draw(st.sampled_from([m.CONNECTING, m.ASKING, m.MARKING, m.COMMITTING,
                                          m.ACTIVE]),
                         label="...once the target is in")
    skip = data.draw(st.integers(0, 3), label="...and after this many more steps")
    for _ in range(data.draw(st.integers(0, 80), label="steps")):
        if crash and w.crashed is None and w.target is not None and w.target.state == crash_in:
            skip -= 1
            if skip < 0:
                w.crash(crash)
                continue
        if data.draw(st.integers(0, 30), label="time passes?") == 0:
            w.tick(data.draw(st.floats(0.5, 3.0), label="seconds"))
            continue
        steps = w.steps()
        if not steps:
            break
        w.step(data.draw(st.sampled_from(steps), label="step"))
    w.quiesce()
    event(f"crashed {w.crashed}, target {w.target and w.target.state}, "
          f"flushed {w.marked_target}")
    check(w)


def test_without_failures_the_target_takes_over_in_the_papers_order() -> None:
    w = World()
    w.step("ready")                      # the target joined the switch: asks the proxy
    assert w.chan[("T", "p")][0] == m.TakeOver(MID)
    w.quiesce()
    check(w)
    assert w.route.serving == "target" and w.initial.state == m.RELEASED
    assert w.target.discarded == 0


def test_the_target_flushes_at_the_initials_marker() -> None:
    t = m.Target(MID)
    t.begin(0.0)
    t.switch_ready(0.0)
    t.from_proxy(("req", 1), 0.1)                       # buffered
    assert t.marker(MID, 0.2) == [m.ToSwitch(("req", 1)), m.ToSwitch(m.Barrier(m.COMMIT, MID))]
    assert t.from_proxy(m.Rerouted(MID), 0.3) == []     # late: it has the marker already
    assert t.state == m.COMMITTING


def test_the_target_discards_the_switchs_messages_until_the_marker() -> None:
    t = m.Target(MID)
    t.begin(0.0)
    t.switch_ready(0.0)
    assert t.from_switch(("pin", 1), 0.1) == [] and t.discarded == 1
    t.from_proxy(("req", 1), 0.1)                       # buffered
    assert t.from_proxy(m.Rerouted(MID), 0.2) == [m.ToSwitch(m.MarkAdd(MID)),
                                                   m.ToSwitch(m.MarkDelete(MID))]
    assert t.marker("another tenant's", 0.25) == []     # not this migration's marker
    assert t.marker(MID, 0.3) == [m.ToSwitch(("req", 1)), m.ToSwitch(m.Barrier(m.COMMIT, MID))]
    assert t.from_switch(("pin", 2), 0.3) == [m.ToProxy(m.Upstream(("pin", 2)))]
    assert t.barrier_reply(m.Barrier(m.COMMIT, "other"), 0.35) == []
    assert t.barrier_reply(m.Barrier(m.COMMIT, MID), 0.4) == [m.ToProxy(m.Committed(MID))]
    assert t.state == m.ACTIVE


@pytest.mark.parametrize("state", [m.CONNECTING, m.ASKING, m.MARKING, m.COMMITTING])
def test_a_target_past_its_deadline_gives_up_and_says_so(state: str) -> None:
    t = m.Target(MID, deadline_s=2.0)
    t.begin(0.0)
    t.state = state
    assert t.tick(1.9) == []
    out = t.tick(2.0)
    assert t.state == m.FAILED and out[-1] == m.StopServing()
    assert (m.ToProxy(m.Abort(MID)) in out) == (state != m.CONNECTING)
    assert t.from_proxy(m.Rerouted(MID), 2.1) == []     # in flight when it gave up


def test_a_route_whose_target_never_commits_goes_back_at_twice_its_deadline() -> None:
    r = m.Route(deadline_s=2.0)
    assert r.from_target(m.TakeOver(MID), 0.0) == [m.ToInitial(m.Drain(MID))]
    assert r.from_tenant(("req", 1), 0.5) == [m.ToTarget(("req", 1))]
    assert r.tick(3.9) == []     # the target's own deadline comes first
    assert r.tick(4.0) == [m.ToTarget(m.Abort(MID)), m.ToInitial(m.Resume(MID)),
                           m.ToInitial(("req", 1))]
    assert (r.state, r.serving) == (m.DIRECT, "initial")
    assert r.from_target(m.Upstream(("pin", 9)), 4.1) == []    # the aborted target's late word
    assert r.from_initial(m.HandedOver(MID), 4.2) == []        # the migration is over
    with pytest.raises(m.ProtocolError, match="migration 'other'"):
        r.from_initial(m.HandedOver("other"), 4.3)


def test_a_route_lets_the_target_through_when_the_initial_is_late_to_hand_over() -> None:
    r = m.Route(deadline_s=2.0)
    r.from_target(m.TakeOver(MID), 0.0)
    assert r.from_target(m.Upstream(("pin", 2)), 0.2) == []      # held
    r.from_target(m.Committed(MID), 0.3)
    assert r.tick(2.3) == [m.ToTenant(("pin", 2))] and r.late
    assert r.from_initial(m.Upstream(("pin", 1)), 2.4) == [m.ToTenant(("pin", 1))]
    assert r.from_initial(m.HandedOver(MID), 2.5) == [m.ToInitial(m.Release(MID))]
    assert (r.state, r.serving) == (m.DIRECT, "target")


def test_a_target_lost_after_committing_resumes_the_initial_without_a_replay() -> None:
    r = m.Route()
    r.from_target(m.TakeOver(MID), 0.0)
    r.from_tenant(("req", 1), 0.2)
    r.from_target(m.Committed(MID), 0.3)
    assert r.lost("target", 0.4) == []
    assert r.from_tenant(("req", 2), 0.5) == []                  # kept for the initial
    assert r.from_initial(m.HandedOver(MID), 0.6) == [m.ToInitial(m.Resume(MID)),
                                                       m.ToInitial(("req", 2))]
    assert (r.state, r.serving) == (m.DIRECT, "initial")


def test_a_take_over_of_a_dead_initials_tenant_skips_the_drain() -> None:
    r = m.Route()
    r.lost("initial", 0.0)
    assert r.from_tenant(("req", 1), 0.05) == []                 # kept for the next instance
    assert r.from_target(m.TakeOver(MID), 0.1) == [m.ToTarget(m.Rerouted(MID)),
                                                   m.ToTarget(("req", 1))]
    assert r.from_target(m.Upstream(("pin", 1)), 0.2) == [m.ToTenant(("pin", 1))]
    assert r.from_target(m.Committed(MID), 0.3) == []            # no initial to release
    assert (r.state, r.serving) == (m.DIRECT, "target")


def test_a_re_attached_initial_gets_what_the_tenant_sent_meanwhile_first() -> None:
    r = m.Route()
    r.lost("initial", 0.0)
    assert r.from_tenant(("req", 1), 0.1) == []
    assert r.reattached(0.2) == [m.ToInitial(("req", 1))]
    assert r.from_tenant(("req", 2), 0.3) == [m.ToInitial(("req", 2))]
    with pytest.raises(m.ProtocolError):
        r.reattached(0.4)                                       # it never left


def test_both_instances_lost_closes_the_tenants_connection() -> None:
    r = m.Route()
    r.from_target(m.TakeOver(MID), 0.0)
    assert r.lost("initial", 0.2) == [m.ToTarget(m.Rerouted(MID))]   # mark it yourself
    assert r.lost("target", 0.3) == [m.CloseTenant()]
    assert r.serving == "none" and r.from_tenant(("req", 1), 0.4) == []


def test_the_initial_ignores_what_is_not_its_migrations() -> None:
    i = m.Initial()
    assert i.from_proxy(m.Drain(MID), 0.0) == [m.ToSwitch(m.MarkAdd(MID)),
                                                m.ToSwitch(m.MarkDelete(MID))]
    assert i.from_proxy(("req", 1), 0.1) == [m.ToSwitch(("req", 1))]   # a replay's
    assert i.marker("another tenant's", 0.2) == [] and i.state == m.DRAINED
    assert i.marker(MID, 0.3) == [m.ToProxy(m.HandedOver(MID))]
    assert i.from_switch(("pin", 5), 0.4) == [] and i.discarded == 1
    assert i.from_proxy(m.Resume(MID), 0.5) == [] and i.state == m.SERVING
    assert i.from_proxy(m.Release(MID), 0.6) == []              # of a migration that is over
    assert i.from_proxy(m.Drain(MID), 0.7) == []                # likewise


@pytest.mark.parametrize("who,msg", [
    ("initial", m.Release(MID)),                 # release of a migration never begun
    ("handed", ("req", 1)),                      # a tenant's word after the hand-over
    ("target", m.HandedOver(MID)),               # a message only the initial sends
])
def test_a_peer_breaking_the_protocol_is_a_protocol_error(who: str, msg: Any) -> None:
    with pytest.raises(m.ProtocolError):
        if who in ("initial", "handed"):
            i = m.Initial()
            if who == "handed":
                i.from_proxy(m.Drain(MID), 0.0)
                i.marker(MID, 0.05)
            i.from_proxy(msg, 0.1)
        else:
            r = m.Route()
            r.from_target(m.TakeOver(MID), 0.0)
            r.from_target(msg, 0.1)


def test_a_target_turned_server_ignores_its_take_overs_late_words() -> None:
    """The adapter replaces an ACTIVE target by a serving Initial that remembers the
    migration: a Rerouted or Abort still in flight must not break the new serving link."""
    i = m.Initial()
    i.ids.past.add(MID)
    assert i.from_proxy(m.Rerouted(MID), 0.0) == [] and i.from_proxy(m.Abort(MID), 0.1) == []
    assert i.state == m.SERVING and i.from_proxy(("req", 1), 0.2) == [m.ToSwitch(("req", 1))]
