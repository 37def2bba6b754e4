"""`RoleCore` instances negotiating with a model of one Open vSwitch bridge.

The model follows OVS's role handling (ofproto.c `handle_role_request`, connmgr.c
`ofconn_set_master_election_id`, `ofconn_set_role`, `ofconn_send_role_status`):

* a new connection is EQUAL;
* NOCHANGE changes nothing and is answered with the connection's role and the bridge's current
  generation_id (2**64-1 while none was ever set: OVS reports "undefined" that way);
* MASTER and SLAVE requests carry a generation_id; once the bridge has one, a request whose id is
  older, compared as the signed 64-bit difference `(int64_t)(req - cur) < 0`, is refused with
  ERROR ROLE_REQUEST_FAILED/STALE and changes nothing; an accepted one becomes the bridge's id.
  EQUAL requests are never checked and do not touch the id;
* a MASTER request demotes the current master to SLAVE and sends it ROLE_STATUS(SLAVE) before the
  new master's ROLE_REPLY is queued;
* packet-ins go to MASTER and EQUAL connections, never to SLAVE ones.

Messages travel in per-connection FIFO queues in each direction (TCP order); hypothesis chooses
which queue moves next, so every interleaving across connections is explored. A controller's
connection can drop and come back; as in the role adapter (roles/app.py), requests go out on the
connection the core was last told about, and held packet-ins of an older connection are dropped
when released.
"""
from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from random import Random
from typing import Any, Deque, Dict, List, Optional, Set, Tuple

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

from ryu_apps.roles.core import (GEN_MASK, Discard, Release, Role, RoleCore, SendRoleRequest,
                                 Settled, State)

TIMEOUT = 3.0


def as_int64(x: int) -> int:
    """Two's complement reading of a 64-bit unsigned value (C's `(int64_t) x`)."""
    x &= GEN_MASK
    return x - (1 << 64) if x >> 63 else x


# -- messages -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RoleReply:
    xid: int
    role: Role
    generation_id: int
    seq: int


@dataclass(frozen=True)
class StaleError:
    xid: int
    seq: int


@dataclass(frozen=True)
class RoleStatus:
    role: Role
    generation_id: int
    seq: int


@dataclass(frozen=True)
class PacketIn:
    pid: int
    conn: int  # serial of the connection it came on (the adapter's `msg.datapath`)
    seq: int


@dataclass
class Conn:
    """One controller connection as the switch sees it, with its two message queues."""

    owner: int
    serial: int
    role: Role = Role.EQUAL
    to_switch: Deque[SendRoleRequest] = field(default_factory=deque)
    to_ctl: Deque[Any] = field(default_factory=deque)

    @property
    def idle(self) -> bool:
        return not self.to_switch and not self.to_ctl


class OvsBridge:
    """The role and packet-in behaviour of one OVS bridge, per controller connection."""

    def __init__(self, generation_id: Optional[int] = None) -> None:
        self.generation_id = generation_id  # None: undefined (no MASTER/SLAVE request yet)
        self.conns: Dict[int, Conn] = {}    # controller index -> its current connection
        self._serials = itertools.count(1)
        self._seq = itertools.count()

    @property
    def reported_generation_id(self) -> int:
        return GEN_MASK if self.generation_id is None else self.generation_id

    def connect(self, owner: int) -> Conn:
        assert owner not in self.conns
        conn = self.conns[owner] = Conn(owner, next(self._serials))
        return conn

    def disconnect(self, owner: int) -> Conn:
        """The connection is gone, with whatever was still queued on it either way."""
        return self.conns.pop(owner)

    def _set_generation_id(self, gen: int) -> bool:
        if self.generation_id is not None and as_int64(gen - self.generation_id) < 0:
            return False
        self.generation_id = gen
        return True

    def handle(self, conn: Conn, req: SendRoleRequest) -> None:
        """Process one ROLE_REQUEST that arrived on conn."""
        if req.role is not Role.NOCHANGE:
            if req.role is not Role.EQUAL and not self._set_generation_id(req.generation_id):
                conn.to_ctl.append(StaleError(req.xid, next(self._seq)))
                return
            if req.role is Role.MASTER and conn.role is not Role.MASTER:
                for other in self.conns.values():
                    if other.role is Role.MASTER:
                        other.role = Role.SLAVE
                        other.to_ctl.append(RoleStatus(Role.SLAVE, self.reported_generation_id,
                                                       next(self._seq)))
            conn.role = req.role
        conn.to_ctl.append(RoleReply(req.xid, conn.role, self.reported_generation_id,
                                     next(self._seq)))

    def step(self, owner: int) -> None:
        conn = self.conns[owner]
        self.handle(conn, conn.to_switch.popleft())

    def packet_in(self, pid: int) -> List[Conn]:
        """A table-miss packet: sent to every MASTER and EQUAL connection."""
        sent = [c for c in self.conns.values() if c.role in (Role.MASTER, Role.EQUAL)]
        for c in sent:
            c.to_ctl.append(PacketIn(pid, c.serial, next(self._seq)))
        return sent

    def masters(self) -> List[Conn]:
        return [c for c in self.conns.values() if c.role is Role.MASTER]


# -- the model on its own -------------------------------------------------------------------------

def _request(bridge: OvsBridge, conn: Conn, role: Role, gen: int, xid: int = 1) -> Any:
    bridge.handle(conn, SendRoleRequest(role, gen, xid))
    return conn.to_ctl.pop()


def test_model_new_connection_is_equal_and_reports_undefined_generation() -> None:
    bridge = OvsBridge()
    conn = bridge.connect(0)
    reply = _request(bridge, conn, Role.NOCHANGE, 0)
    assert (reply.role, reply.generation_id) == (Role.EQUAL, GEN_MASK)


def test_model_refuses_older_generation_ids_as_signed_64_bit_differences() -> None:
    bridge = OvsBridge(generation_id=10)
    conn = bridge.connect(0)
    assert isinstance(_request(bridge, conn, Role.MASTER, 9), StaleError)
    assert isinstance(_request(bridge, conn, Role.SLAVE, 9), StaleError)
    assert _request(bridge, conn, Role.SLAVE, 10).role is Role.SLAVE  # equal is not older
    assert _request(bridge, conn, Role.EQUAL, 0).role is Role.EQUAL   # EQUAL is never checked
    assert bridge.generation_id == 10
    wrap = OvsBridge(generation_id=GEN_MASK - 1)
    c = wrap.connect(0)
    assert _request(wrap, c, Role.MASTER, 3).role is Role.MASTER       # 3 - (2**64-2) = 5 > 0
    assert wrap.generation_id == 3
    assert isinstance(_request(wrap, c, Role.SLAVE, 3 + (1 << 63)), StaleError)  # int64 < 0


def test_model_any_generation_is_accepted_while_undefined() -> None:
    bridge = OvsBridge()
    conn = bridge.connect(0)
    assert _request(bridge, conn, Role.SLAVE, GEN_MASK).role is Role.SLAVE
    assert bridge.generation_id == GEN_MASK
    assert _request(bridge, conn, Role.MASTER, 0).role is Role.MASTER  # 0 - (2**64-1) = +1


def test_model_new_master_demotes_old_one_with_role_status_before_its_reply() -> None:
    bridge = OvsBridge()
    a, b = bridge.connect(0), bridge.connect(1)
    bridge.handle(a, SendRoleRequest(Role.MASTER, 5, 1))
    bridge.handle(b, SendRoleRequest(Role.MASTER, 6, 2))
    status, reply = a.to_ctl[-1], b.to_ctl[-1]
    assert isinstance(status, RoleStatus) and (status.role, status.generation_id) == (Role.SLAVE, 6)
    assert isinstance(reply, RoleReply) and reply.role is Role.MASTER
    assert status.seq < reply.seq
    assert (a.role, b.role) == (Role.SLAVE, Role.MASTER)


def test_model_packet_ins_go_to_master_and_equal_but_not_slave() -> None:
    bridge = OvsBridge()
    m, e, s = bridge.connect(0), bridge.connect(1), bridge.connect(2)
    bridge.handle(m, SendRoleRequest(Role.MASTER, 1, 1))
    bridge.handle(s, SendRoleRequest(Role.SLAVE, 1, 1))
    assert {c.owner for c in bridge.packet_in(7)} == {m.owner, e.owner}


# -- a controller cluster around the model --------------------------------------------------------

class Cluster:
    """N role cores (controller instances) attached to one modelled bridge."""

    def __init__(self, wants: List[Role], generation_id: Optional[int] = None,
                 hold_limit: int = 4096) -> None:
        self.now = 0.0
        self.bridge = OvsBridge(generation_id)
        self.cores = [RoleCore(want=w, timeout=TIMEOUT, hold_limit=hold_limit) for w in wants]
        # The connection the adapter was last told about, per controller (its `datapaths` entry).
        self.announced: List[Optional[Conn]] = [None] * len(wants)
        self.admitted: Dict[int, List[int]] = {}            # pid -> controllers that answered it
        self.admit_order: Dict[Tuple[int, int], List[int]] = {}  # (ctl, conn serial) -> pids
        self.queued_to: Dict[int, Set[Tuple[int, int]]] = {}  # pid -> {(ctl, conn serial)}
        self.raised_without_master_conn: Set[int] = set()
        self.overflow_at_connect: Dict[Tuple[int, int], int] = {}
        self.discarded = 0
        self.stale_released = 0
        self._pids = itertools.count()

    # -- connections ----------------------------------------------------------------------------
    def connect(self, i: int) -> Conn:
        conn = self.bridge.connect(i)
        self.overflow_at_connect[(i, conn.serial)] = self.cores[i].overflowed
        return conn

    def announce(self, i: int) -> None:
        """The platform tells the adapter about the connection (EventOFPStateChange MAIN)."""
        conn = self.bridge.conns[i]
        assert self.announced[i] is not conn
        self.announced[i] = conn
        self.run(i, conn, self.cores[i].connected(self.now))

    def drop(self, i: int, notify: bool) -> None:
        """The connection dies; the adapter hears of it only if it knew it and `notify`."""
        conn = self.bridge.disconnect(i)
        if notify and self.announced[i] is conn:
            self.announced[i] = None
            self.run(i, conn, self.cores[i].disconnected(self.now))

    def is_announced(self, i: int) -> bool:
        conn = self.bridge.conns.get(i)
        return conn is not None and self.announced[i] is conn

    # -- traffic --------------------------------------------------------------------------------
    def raise_packet_in(self, master: Optional[int]) -> int:
        pid = next(self._pids)
        sent = self.bridge.packet_in(pid)
        self.queued_to[pid] = {(c.owner, c.serial) for c in sent}
        if master is None or master not in self.bridge.conns:
            self.raised_without_master_conn.add(pid)
        return pid

    def to_switch(self, i: int) -> None:
        self.bridge.step(i)

    def to_controller(self, i: int) -> None:
        conn = self.bridge.conns[i]
        msg = conn.to_ctl.popleft()
        core = self.cores[i]
        if isinstance(msg, PacketIn):
            if core.packet_in(self.now, msg):
                self.admit(i, msg)
            return
        if isinstance(msg, RoleReply):
            actions = core.role_reply(self.now, msg.xid, msg.role, msg.generation_id)
        elif isinstance(msg, StaleError):
            actions = core.role_error_stale(self.now, msg.xid)
        else:
            assert isinstance(msg, RoleStatus)
            actions = core.role_status(self.now, msg.role, msg.generation_id)
        self.run(i, conn, actions)

    def tick(self, dt: float) -> None:
        self.now += dt
        for i, core in enumerate(self.cores):
            conn = self.announced[i]
            if conn is not None:  # the adapter's ticker walks its known datapaths only
                self.run(i, conn, core.tick(self.now))

    def run(self, i: int, conn: Conn, actions: List[Any]) -> None:
        """Carry out a core's actions on `conn`, as roles/app.py `_run` does."""
        alive = self.bridge.conns.get(i) is conn
        for action in actions:
            if isinstance(action, SendRoleRequest):
                if alive:
                    conn.to_switch.append(action)
            elif isinstance(action, Release):
                for msg in action.msgs:
                    if msg.conn == conn.serial:
                        self.admit(i, msg)
                    else:
                        self.stale_released += 1
            elif isinstance(action, Discard):
                assert action.count > 0
                self.discarded += action.count
            else:
                assert isinstance(action, Settled)

    def admit(self, i: int, msg: PacketIn) -> None:
        self.admitted.setdefault(msg.pid, []).append(i)
        self.admit_order.setdefault((i, msg.conn), []).append(msg.pid)

    # -- scheduling -----------------------------------------------------------------------------
    def movable(self) -> List[Tuple[int, bool]]:
        """(controller, toward the switch?) for every queue with a message in it."""
        out = []
        for i, conn in sorted(self.bridge.conns.items()):
            if conn.to_switch:
                out.append((i, True))
            if conn.to_ctl:
                out.append((i, False))
        return out

    def move(self, i: int, toward_switch: bool) -> None:
        if toward_switch:
            self.to_switch(i)
        else:
            self.to_controller(i)

    def deliver_all(self, rnd: Random, limit: int = 5000) -> None:
        for _ in range(limit):
            queues = self.movable()
            if not queues:
                return
            self.move(*rnd.choice(queues))
        raise AssertionError("messages kept flowing: the negotiation does not converge")

    def connect_everyone(self) -> None:
        for i in range(len(self.cores)):
            if i not in self.bridge.conns:
                self.connect(i)
            if not self.is_announced(i):
                self.announce(i)


# -- deterministic scenarios on the model ---------------------------------------------------------

def test_master_and_slave_settle_on_a_fresh_bridge() -> None:
    cl = Cluster([Role.MASTER, Role.SLAVE])
    cl.connect_everyone()
    cl.deliver_all(Random(0))
    assert cl.cores[0].is_master and cl.bridge.conns[0].role is Role.MASTER
    assert cl.cores[1].role is Role.SLAVE and cl.bridge.conns[1].role is Role.SLAVE
    assert cl.bridge.generation_id is not None


def test_early_packet_ins_are_answered_once_by_the_master_and_dropped_by_the_slave() -> None:
    """Both new connections are EQUAL, so both get the first packet-ins: only one may answer."""
    cl = Cluster([Role.MASTER, Role.SLAVE])
    cl.connect(0)
    cl.connect(1)
    pids = [cl.raise_packet_in(master=0) for _ in range(3)]
    cl.connect_everyone()
    cl.deliver_all(Random(1))
    assert {p: cl.admitted.get(p) for p in pids} == {p: [0] for p in pids}
    assert cl.discarded == 3


def test_new_master_demotes_the_old_one_which_then_stops_wanting_master() -> None:
    """The hand-over the core supports by itself: promote the new master, and the old one learns
    from ROLE_STATUS that it is SLAVE now, and keeps to that after a reconnection."""
    cl = Cluster([Role.MASTER, Role.SLAVE])
    cl.connect_everyone()
    cl.deliver_all(Random(2))
    cl.run(1, cl.bridge.conns[1], cl.cores[1].set_want(cl.now, Role.MASTER))
    cl.deliver_all(Random(3))
    assert cl.cores[1].is_master and not cl.cores[0].is_master
    assert cl.cores[0].want is Role.SLAVE and cl.cores[0].state is State.SETTLED
    assert [c.owner for c in cl.bridge.masters()] == [1]
    cl.drop(0, notify=True)
    cl.connect_everyone()
    cl.deliver_all(Random(4))
    assert [c.owner for c in cl.bridge.masters()] == [1]


def test_switch_with_an_old_high_generation_id_still_accepts_the_master() -> None:
    cl = Cluster([Role.SLAVE, Role.MASTER], generation_id=(1 << 63) + 12345)
    cl.connect_everyone()
    cl.deliver_all(Random(5))
    assert cl.cores[1].is_master
    assert cl.bridge.generation_id == (1 << 63) + 12346


def test_slave_request_made_stale_by_the_master_is_retried() -> None:
    """The slave learns generation g, the master then claims g+1: the slave's SLAVE(g) is stale."""
    cl = Cluster([Role.MASTER, Role.SLAVE], generation_id=100)
    cl.connect_everyone()
    cl.to_switch(0)
    cl.to_switch(1)            # both queries answered with 100
    cl.to_controller(0)        # master sends MASTER(101)
    cl.to_controller(1)        # slave sends SLAVE(100)
    cl.to_switch(0)            # MASTER(101) accepted
    cl.to_switch(1)            # SLAVE(100) refused
    assert isinstance(cl.bridge.conns[1].to_ctl[0], StaleError)
    cl.deliver_all(Random(6))
    assert cl.cores[0].is_master
    assert cl.cores[1].state is State.SETTLED and cl.cores[1].role is Role.SLAVE
    assert cl.bridge.generation_id == 101


def test_handover_reversed_while_the_first_is_in_flight_converges() -> None:
    """Minimal hand-over case the stateful test found: the master steps down, the standby is
    promoted, and mastership is handed straight back while the standby's MASTER request is still
    in flight. Each step respects the cut point (at most one instance wants MASTER, and it is
    promoted only once the previous master is no longer MASTER at the switch).

    BUG: the standby's set_want(SLAVE) arrives while it is REQUESTING MASTER; the core only
    records it, then settles as MASTER when the reply comes, so the switch keeps it as master and
    the cut point for promoting the next master never comes.
    """
    cl = Cluster([Role.MASTER, Role.SLAVE])
    cl.connect_everyone()
    cl.deliver_all(Random(11))
    cl.run(0, cl.bridge.conns[0], cl.cores[0].set_want(cl.now, Role.SLAVE))
    cl.to_switch(0)                                # the switch has 0 as SLAVE now: cut point
    assert cl.bridge.conns[0].role is Role.SLAVE
    cl.run(1, cl.bridge.conns[1], cl.cores[1].set_want(cl.now, Role.MASTER))
    assert [r.role for r in cl.bridge.conns[1].to_switch] == [Role.MASTER]
    cl.run(1, cl.bridge.conns[1], cl.cores[1].set_want(cl.now, Role.SLAVE))   # hand back...
    cl.deliver_all(Random(12))
    assert cl.cores[1].state is State.SETTLED
    assert cl.cores[1].role is Role.SLAVE, "1 stays MASTER although told to step down"
    cl.run(0, cl.bridge.conns[0], cl.cores[0].set_want(cl.now, Role.MASTER))  # ...and promote 0
    cl.deliver_all(Random(13))
    assert cl.cores[0].is_master and [c.owner for c in cl.bridge.masters()] == [0]


# -- message loss: recovered by tick() deadlines --------------------------------------------------

def _lose_first(queue: Deque[Any], kind: type) -> Any:
    """Remove the first message of `kind` from a queue (the network lost it)."""
    for k, msg in enumerate(queue):
        if isinstance(msg, kind):
            del queue[k]
            return msg
    raise AssertionError(f"no {kind.__name__} in {list(queue)}")


@pytest.mark.parametrize("lose", ["query", "query reply", "master request", "master reply"])
def test_lost_role_message_is_recovered_by_the_deadline(lose: str) -> None:
    """The switch never answers (or never sees) one message: the deadline asks again."""
    cl = Cluster([Role.MASTER, Role.SLAVE])
    cl.connect_everyone()
    a = cl.bridge.conns[0]
    cl.raise_packet_in(master=0)  # held by both: both connections are still EQUAL
    if lose == "query":
        _lose_first(a.to_switch, SendRoleRequest)
    else:
        cl.to_switch(0)
        if lose == "query reply":
            _lose_first(a.to_ctl, RoleReply)
        else:
            while a.to_ctl:
                cl.to_controller(0)
            assert [r.role for r in a.to_switch] == [Role.MASTER]
            if lose == "master request":
                _lose_first(a.to_switch, SendRoleRequest)
            else:
                cl.to_switch(0)
                assert a.role is Role.MASTER, "the switch did make it master"
                _lose_first(a.to_ctl, RoleReply)
    cl.deliver_all(Random(7))
    assert cl.cores[0].state is not State.SETTLED, "nothing moves until the deadline"
    assert cl.cores[1].role is Role.SLAVE
    cl.tick(TIMEOUT - 0.5)
    cl.deliver_all(Random(8))
    assert not cl.cores[0].is_master, "deadline not reached yet"
    cl.tick(0.5)
    cl.deliver_all(Random(9))
    assert cl.cores[0].is_master and a.role is Role.MASTER
    assert cl.admitted == {0: [0]}, "the held packet-in is answered once, after recovery"


def test_late_reply_to_a_lost_and_retried_request_is_ignored() -> None:
    cl = Cluster([Role.MASTER])
    cl.connect_everyone()
    a = cl.bridge.conns[0]
    cl.to_switch(0)
    cl.to_controller(0)          # query answered: MASTER(0) queued
    cl.tick(TIMEOUT)             # no answer yet: the core asks again
    cl.to_switch(0)              # MASTER(0) processed, reply queued (for an abandoned xid)
    late = a.to_ctl[0]
    assert isinstance(late, RoleReply) and late.role is Role.MASTER
    cl.to_controller(0)
    assert cl.cores[0].state is State.QUERYING, "a reply to an abandoned xid settles nothing"
    cl.deliver_all(Random(10))
    assert cl.cores[0].is_master and cl.bridge.generation_id == 1


# -- the stateful test ----------------------------------------------------------------------------

class RoleNegotiation(RuleBasedStateMachine):
    """Two or three instances, exactly one configured MASTER, against one OVS bridge.

    Invariants: the bridge never has two masters; a packet-in is answered by at most one instance,
    and only by the configured master; a settled core agrees with the bridge about its role when
    nothing is in flight on its connection. The drain rule checks liveness: with everyone connected
    and every queue emptied, the master is settled MASTER and the others settled SLAVE, and the
    master answered every packet-in of its current connection, in order (less any it dropped for
    the hold limit).
    """

    def __init__(self) -> None:
        super().__init__()
        self.cl: Cluster = None  # type: ignore[assignment]
        self.master: Optional[int] = None

    @initialize(n=st.integers(2, 3), master=st.integers(0, 2),
                generation_id=st.one_of(st.none(), st.integers(0, GEN_MASK),
                                        st.sampled_from([GEN_MASK, 1 << 63, (1 << 63) - 1])),
                hold_limit=st.sampled_from([2, 4096]))
    def setup(self, n: int, master: int, generation_id: Optional[int], hold_limit: int) -> None:
        self.master = master % n
        wants = [Role.MASTER if i == self.master else Role.SLAVE for i in range(n)]
        self.cl = Cluster(wants, generation_id, hold_limit)

    # -- helpers --------------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return len(self.cl.cores)

    def _disconnected(self) -> List[int]:
        return [i for i in range(self.n) if i not in self.cl.bridge.conns]

    def _unannounced(self) -> List[int]:
        return [i for i in self.cl.bridge.conns if not self.cl.is_announced(i)]

    # -- rules ----------------------------------------------------------------------------------
    @precondition(lambda self: bool(self.cl.movable()))
    @rule(data=st.data())
    def deliver_one_message(self, data: st.DataObject) -> None:
        self.cl.move(*data.draw(st.sampled_from(self.cl.movable()), label="queue"))

    @rule()
    def packet_arrives_at_the_switch(self) -> None:
        self.cl.raise_packet_in(self.master)

    @rule(dt=st.sampled_from([0.25, 1.0, TIMEOUT, 10.0]))
    def time_passes(self, dt: float) -> None:
        self.cl.tick(dt)

    @precondition(lambda self: bool(self.cl.bridge.conns))
    @rule(data=st.data(), notify=st.booleans())
    def connection_drops(self, data: st.DataObject, notify: bool) -> None:
        """notify=False: the adapter never hears of it (a replacement connection came first)."""
        self.cl.drop(data.draw(st.sampled_from(sorted(self.cl.bridge.conns)), label="who"),
                     notify)

    @precondition(lambda self: bool(self._disconnected()))
    @rule(data=st.data())
    def switch_reconnects(self, data: st.DataObject) -> None:
        self.cl.connect(data.draw(st.sampled_from(self._disconnected()), label="who"))

    @precondition(lambda self: bool(self._unannounced()))
    @rule(data=st.data())
    def platform_announces_connection(self, data: st.DataObject) -> None:
        self.cl.announce(data.draw(st.sampled_from(self._unannounced()), label="who"))

    @precondition(lambda self: any(self.cl.is_announced(i) for i in range(self.n)))
    @rule(data=st.data())
    def instance_reasserts_its_configured_role(self, data: st.DataObject) -> None:
        i = data.draw(st.sampled_from([i for i in range(self.n) if self.cl.is_announced(i)]))
        want = Role.MASTER if i == self.master else Role.SLAVE
        self.cl.run(i, self.cl.bridge.conns[i], self.cl.cores[i].set_want(self.cl.now, want))

    @rule(seed=st.integers(0, 2**16))
    def everything_connects_and_drains(self, seed: int) -> None:
        """Deliver every queued message, in an order chosen by `seed`."""
        self.cl.connect_everyone()
        self.settle(Random(seed))
        self.check_liveness()

    def settle(self, rnd: Random) -> None:
        self.cl.deliver_all(rnd)

    # -- checks ---------------------------------------------------------------------------------
    def check_liveness(self) -> None:
        cl, master = self.cl, self.master
        for i, core in enumerate(cl.cores):
            conn = cl.bridge.conns[i]
            want = Role.MASTER if i == master else Role.SLAVE
            assert core.state is State.SETTLED, f"controller {i} is {core.state} after draining"
            assert core.role is want, f"controller {i} settled {core.role!r}, configured {want!r}"
            assert conn.role is want, f"switch has controller {i} as {conn.role!r}"
        if master is not None:
            self.check_no_loss(master)

    def check_no_loss(self, m: int) -> None:
        cl = self.cl
        serial = cl.bridge.conns[m].serial
        sent = sorted(p for p, to in cl.queued_to.items() if (m, serial) in to)
        answered = cl.admit_order.get((m, serial), [])
        assert answered == sorted(answered), "the master answered packet-ins out of order"
        missing = set(sent) - set(answered)
        dropped = cl.cores[m].overflowed - cl.overflow_at_connect[(m, serial)]
        assert len(missing) <= dropped, (
            f"master never answered {sorted(missing)} of its live connection "
            f"(only {dropped} dropped for the hold limit)")

    @invariant()
    def switch_never_has_two_masters(self) -> None:
        if self.cl is not None:
            assert len(self.cl.bridge.masters()) <= 1

    @invariant()
    def packet_ins_answered_at_most_once(self) -> None:
        if self.cl is not None:
            for pid, who in self.cl.admitted.items():
                assert len(who) == 1, f"packet-in {pid} answered by {who}"

    @invariant()
    def only_the_configured_master_answers(self) -> None:
        if self.cl is not None:
            for pid, who in self.cl.admitted.items():
                assert who == [self.master], f"packet-in {pid} answered by {who}"
                assert pid not in self.cl.raised_without_master_conn

    @invariant()
    def settled_core_agrees_with_the_switch(self) -> None:
        if self.cl is None:
            return
        for i, core in enumerate(self.cl.cores):
            conn = self.cl.bridge.conns.get(i)
            if conn is not None and self.cl.is_announced(i) and conn.idle \
                    and core.state is State.SETTLED:
                assert core.role is conn.role, (
                    f"controller {i} settled {core.role!r}, switch says {conn.role!r}")


class LossyRoleNegotiation(RoleNegotiation):
    """As above, and role requests, replies and STALE errors may be lost; ticks must recover."""

    def _role_queues(self) -> List[Tuple[int, bool]]:
        out = []
        for i, conn in sorted(self.cl.bridge.conns.items()):
            if conn.to_switch:
                out.append((i, True))
            if conn.to_ctl and isinstance(conn.to_ctl[0], (RoleReply, StaleError)):
                out.append((i, False))
        return out

    @precondition(lambda self: self.cl is not None and bool(self._role_queues()))
    @rule(data=st.data())
    def role_message_is_lost(self, data: st.DataObject) -> None:
        i, toward_switch = data.draw(st.sampled_from(self._role_queues()), label="queue")
        conn = self.cl.bridge.conns[i]
        (conn.to_switch if toward_switch else conn.to_ctl).popleft()

    def settle(self, rnd: Random) -> None:
        for _ in range(10):
            self.cl.deliver_all(rnd)
            if all(c.state is State.SETTLED for c in self.cl.cores):
                return
            self.cl.tick(TIMEOUT)
        raise AssertionError("deadlines did not recover from the lost messages")


class RoleHandover(RoleNegotiation):
    """Mastership moves between instances with set_want, at most one wanting MASTER at a time.

    The hand-over waits for a cut point: the old master is told to want SLAVE, and the new one is
    told to want MASTER only once the switch no longer has the old one as MASTER and no MASTER
    request of the old one is on its way to the switch. (Promoting earlier makes the switch send
    the new master a ROLE_STATUS(SLAVE) for the old master's request, or send the old master one
    for the new master's, and by "never fight a new master" that can leave no master at all.)
    Packet-ins around a hand-over may be answered twice (migrations bring their own cut point for
    them), so only role convergence is checked here.
    """

    def __init__(self) -> None:
        super().__init__()
        self.promote: Optional[int] = None
        self.demoted: Optional[int] = None

    def _send(self, i: int, actions: List[Any]) -> None:
        conn = self.cl.announced[i]
        if conn is not None:
            self.cl.run(i, conn, actions)
        else:
            assert not actions

    @precondition(lambda self: self.cl is not None and self.master is not None)
    @rule(data=st.data())
    def master_is_told_to_step_down(self, data: st.DataObject) -> None:
        old = self.master
        assert old is not None
        self.promote = data.draw(st.sampled_from([i for i in range(self.n) if i != old]))
        self.demoted, self.master = old, None
        self._send(old, self.cl.cores[old].set_want(self.cl.now, Role.SLAVE))

    def _cut_point_passed(self) -> bool:
        conn = self.cl.bridge.conns.get(self.demoted) if self.demoted is not None else None
        return conn is None or (conn.role is not Role.MASTER
                                and not any(r.role is Role.MASTER for r in conn.to_switch))

    @precondition(lambda self: self.promote is not None and self._cut_point_passed())
    @rule()
    def new_master_is_told_to_take_over(self) -> None:
        new = self.promote
        assert new is not None
        self.master, self.promote, self.demoted = new, None, None
        self._send(new, self.cl.cores[new].set_want(self.cl.now, Role.MASTER))

    def instance_reasserts_its_configured_role(self) -> None:  # type: ignore[override]
        """Not a rule here: which role is configured changes."""

    def settle(self, rnd: Random) -> None:
        self.cl.deliver_all(rnd)
        if self.promote is not None:
            d = self.demoted
            assert self._cut_point_passed(), (
                f"controller {d} was told to step down but is still MASTER at the switch "
                f"after draining: {self.cl.cores[d]!r}")
            self.new_master_is_told_to_take_over()
            self.cl.deliver_all(rnd)

    def check_no_loss(self, m: int) -> None:
        """Not a property of hand-overs (see the class docstring)."""

    def packet_ins_answered_at_most_once(self) -> None:
        """Not an invariant here: a hand-over may answer a packet-in twice."""

    def only_the_configured_master_answers(self) -> None:
        """Not an invariant here: the configured master changes."""


_SETTINGS = settings(max_examples=150, stateful_step_count=60, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

TestRoleNegotiation = RoleNegotiation.TestCase
TestRoleNegotiation.settings = _SETTINGS
TestLossyRoleNegotiation = LossyRoleNegotiation.TestCase
TestLossyRoleNegotiation.settings = _SETTINGS
TestRoleHandover = RoleHandover.TestCase
# No shrinking here: shrinking a hand-over failure takes up to a minute, which would blow the unit
# suite's time budget; the failure message names the controller and its core, and
# test_handover_reversed_while_the_first_is_in_flight_converges is the minimal case.
TestRoleHandover.settings = settings(_SETTINGS, max_examples=300,
                                     phases=[Phase.explicit, Phase.reuse, Phase.generate])
