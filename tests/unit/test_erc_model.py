"""One `InitiatorCore` and k = 1..3 `CandidateCore`s migrating one modelled Open vSwitch bridge.

The switch (one bridge; as in `test_roles_ovs_model.py` and PLATFORM.md):
* roles MASTER / EQUAL / SLAVE per connection and one generation_id; MASTER and SLAVE requests
  older than it (signed 64-bit difference) get STALE, EQUAL is never checked; a MASTER request
  demotes the old master to SLAVE and queues ROLE_STATUS to it before the requester's reply;
* PACKET_IN and FLOW_REMOVED go to MASTER and EQUAL connections, and to a SLAVE whose controller
  turned Standby on (SET_ASYNC); each connection is one FIFO queue in each direction;
* PlaceMarker is a flow add+delete on the initiator's connection: when the switch processes it
  (refused if that connection is SLAVE) a FLOW_REMOVED with the tag is queued to every connection
  receiving async messages at that point of the stream.
The bus: one FIFO queue per sender -> receiver, through `wire.encode/decode`; any message may be
lost. A crash removes the controller's switch connection and inbound bus queues (what it already
published stays); survivors are told at once (`peer_gone` / `initiator_gone`: a perfect, prompt
failure detector). Time moves only by rule, so deadlines also fire while messages are in flight.

The adapter played here: RequestRole goes to the switch (fenced: exactly that generation, STALE ->
`role_refused`; unfenced: the switch's current generation, +1 for MASTER, i.e. query-then-request
collapsed); replies -> `role_confirmed`, ROLE_STATUS -> `role_status`. Standby is a plain SET_ASYNC
queued on the connection like everything else (no barrier).
A packet-in the ERC core does not buffer goes to a minimal role layer, as roles/core.py does:
answered if the controller believes it is MASTER with no role request in flight, held while one
is in flight (answered if MASTER is confirmed, else dropped), ignored otherwise. Release answers
in order, then `flushed` runs later as an app task; TakeSnapshot is an app task dumping the app
state; Restore copies the snapshot (copy or shared) and calls `restored_state` with the digest of
what it restored; Claim is SET NX on a shared dict (won if the key holds `who`). Answering
packet-in p sets `app[p % 4] = p` in the answering controller's app state.

What the protocol promises, checked at quiescence (every queue drained, every app task done, time
moved past every deadline). A packet-in p is *owed* (must be answered) iff
  A. the initiator handled p while its migration was live (answered it before the freeze point or
     buffered it), and the initiator survived, or the final master took over with the state
     (restored and marked: it holds the gap and everything after its marker); except p raised
     while the winner of a committed migration was MASTER (after DRAINED those are the winner's
     alone: the initiator drops its copies, and a winner that dies later loses them); or
  B. p was raised while the MASTER connection belonged to a controller that survived; or
  C. the final master itself buffered, held, or was handed p (gap).
The rest is lost by nature: p held only by controllers that crashed, raised while only crashed or
non-buffering controllers received it, or held by a dead initiator when a candidate without the
state rescued the switch (the gap dies with the initiator).
At most once, except (`excused_duplicate`) what a retake releases that the winner had answered,
and what a rescuer without the state held that the dead initiator had answered.
After every step: at most one MASTER; each controller answers in raise order; a standby
(committed) initiator receives every packet-in. At quiescence: the right single MASTER (the
initiator after abort/cancel/retake; the winner after a commit unless it crashed after the
initiator finished; after an initiator crash mid-migration, someone if a candidate had the state
and the claim holder lives); its app state is every answer folded in order when it has the
migrated state; no other controller is EQUAL/MASTER, in standby, or keeps a buffer or state.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections import deque
from dataclasses import dataclass, field
from random import Random
from typing import Any, Callable, Deque, Dict, FrozenSet, List, Optional, Set, Tuple

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from ryu_apps.erc import wire
from ryu_apps.erc.core import (COMMIT_TIMEOUT_S, RESCUE_GRACE_S, CandidateCore, Claim, DropBuffer,
                               DropState, Finished, InitiatorCore, Mig, Note, PlaceMarker,
                               PublishSnapshot, Release, RequestRole, Restore, Send, Standby, Step,
                               TakeSnapshot, split_gap)
from ryu_apps.roles.core import GEN_MASK, Role

MIG, DPID, INIT = "m1", 0x2A, "a"
CANDS = ("b", "c", "d")
TIMEOUT, CAND_TIMEOUT = 10.0, 5.0


def as_int64(x: int) -> int:
    x &= GEN_MASK
    return x - (1 << 64) if x >> 63 else x


# -- the switch -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PacketIn:
    pid: int

    @property
    def buf(self) -> bytes:  # the raw bytes the initiator puts in a STATE's gap
        return b"PI%d" % self.pid


@dataclass(frozen=True)
class FlowRemoved:
    tag: int


@dataclass(frozen=True)
class RoleReq:
    role: Role
    gen: Optional[int]
    fenced: bool


@dataclass(frozen=True)
class RoleReply:
    role: Role
    gen: int


@dataclass(frozen=True)
class RoleStatus:
    role: Role
    gen: int


@dataclass(frozen=True)
class Stale:
    pass


@dataclass(frozen=True)
class FlowMarker:
    tag: int


@dataclass(frozen=True)
class SetAsync:
    slave_async: bool


@dataclass
class Conn:
    owner: str
    role: Role
    slave_async: bool = False
    up: Deque[Any] = field(default_factory=deque)     # controller -> switch
    down: Deque[Any] = field(default_factory=deque)   # switch -> controller

    @property
    def gets_async(self) -> bool:
        return self.role in (Role.MASTER, Role.EQUAL) or self.slave_async


class Bridge:
    """Role, generation_id and async-message behaviour of one OVS bridge."""

    def __init__(self, gen: int, owners: List[str], master: str) -> None:
        self.gen = gen
        self.conns = {o: Conn(o, Role.MASTER if o == master else Role.SLAVE) for o in owners}
        self.markers_refused = 0

    def masters(self) -> List[str]:
        return [o for o, c in self.conns.items() if c.role is Role.MASTER]

    def broadcast(self, msg: Any) -> List[str]:
        got = [o for o, c in self.conns.items() if c.gets_async]
        for o in got:
            self.conns[o].down.append(msg)
        return got

    def step(self, owner: str) -> None:
        conn = self.conns[owner]
        req = conn.up.popleft()
        if isinstance(req, FlowMarker):
            if conn.role is Role.SLAVE:
                self.markers_refused += 1   # ERROR IS_SLAVE: no flow, no FLOW_REMOVED
            else:
                self.broadcast(FlowRemoved(req.tag))
        elif isinstance(req, SetAsync):
            conn.slave_async = req.slave_async
        elif req.role is Role.EQUAL:
            conn.role = Role.EQUAL
            conn.down.append(RoleReply(Role.EQUAL, self.gen))
        else:
            gen = req.gen
            if gen is None or (not req.fenced and as_int64(gen - self.gen) < 0):
                gen = (self.gen + 1) & GEN_MASK if req.role is Role.MASTER else self.gen
            if as_int64(gen - self.gen) < 0:
                conn.down.append(Stale())
                return
            self.gen = gen
            if req.role is Role.MASTER:
                for other in self.conns.values():
                    if other is not conn and other.role is Role.MASTER:
                        other.role = Role.SLAVE
                        other.down.append(RoleStatus(Role.SLAVE, gen))
            conn.role = req.role
            conn.down.append(RoleReply(conn.role, gen))


def test_model_bridge_fences_stale_requests_and_demotes_with_role_status_first() -> None:
    br = Bridge(GEN_MASK - 1, ["a", "b", "c"], "a")
    br.conns["b"].up.append(RoleReq(Role.MASTER, 3, fenced=True))       # wraps: newer
    br.step("b")
    assert (br.masters(), br.gen) == (["b"], 3)
    assert br.conns["a"].down.popleft() == RoleStatus(Role.SLAVE, 3)
    assert br.conns["b"].down.popleft() == RoleReply(Role.MASTER, 3)
    br.conns["a"].up.extend([RoleReq(Role.MASTER, 2, fenced=True), RoleReq(Role.MASTER, None, False)])
    br.step("a")
    assert br.conns["a"].down.popleft() == Stale() and br.masters() == ["b"]
    br.step("a")
    assert br.masters() == ["a"] and br.gen == 4
    br.conns["c"].up.append(RoleReq(Role.EQUAL, 0, fenced=False))       # never checked
    br.step("c")
    assert br.conns["c"].role is Role.EQUAL and br.gen == 4


def test_model_bridge_async_messages_reach_master_equal_and_standby_slaves_only() -> None:
    br = Bridge(5, ["a", "b", "c"], "a")
    br.conns["b"].role = Role.EQUAL
    assert br.broadcast(PacketIn(0)) == ["a", "b"]
    br.conns["c"].up.append(SetAsync(True))
    br.step("c")
    assert br.broadcast(PacketIn(1)) == ["a", "b", "c"]
    br.conns["a"].role = Role.SLAVE
    br.conns["a"].up.append(FlowMarker(7))
    br.step("a")
    assert br.markers_refused == 1 and FlowRemoved(7) not in br.conns["b"].down


# -- the controllers and the world ----------------------------------------------------------------

@dataclass
class Ctl:
    """One controller instance: its ERC core, a minimal role layer, its app state."""

    name: str
    believed: Role
    pending: int = 0                                 # role requests in flight
    held: List[PacketIn] = field(default_factory=list)
    app: Dict[str, int] = field(default_factory=dict)
    answered: List[int] = field(default_factory=list)
    custody: Set[int] = field(default_factory=set)   # buffered, held, handed in a gap, answered
    core: Any = None
    alive: bool = True
    took_over_with_state: Optional[bool] = None      # candidates: set when they ask for MASTER
    outcome: str = ""


def snapshot_of(app: Dict[str, int]) -> Tuple[bytes, str]:
    snap = json.dumps(app, sort_keys=True).encode()
    return snap, hashlib.sha256(snap).hexdigest()[:16]


def qname(move: Tuple[str, str, str]) -> str:
    kind, a, b = move
    return {"bus": f"bus {a}>{b}", "task": "task"}.get(kind, f"{kind} {a}")


class World:
    """The switch, the bus, the controllers and the record of who answered what."""

    def __init__(self, k: int = 1, commit: str = "phase2", transfer: str = "copy", gen: int = 5,
                 corrupt: FrozenSet[str] = frozenset()) -> None:
        self.now = 0.0
        self.cands = list(CANDS[:k])
        self.bridge = Bridge(gen, [INIT, *self.cands], INIT)
        self.ctl = {INIT: Ctl(INIT, Role.MASTER)}
        self.ctl.update({c: Ctl(c, Role.SLAVE) for c in self.cands})
        self.bus: Dict[Tuple[str, str], Deque[bytes]] = {}
        self.tasks: List[Tuple[str, str, Callable[[], None]]] = []   # (owner, label, run)
        self.claims: Dict[str, str] = {}
        self.store: Dict[str, bytes] = {}
        self.corrupt = corrupt
        self._pid = itertools.count()
        self._seq = itertools.count(1)
        self.raised: List[int] = []
        self.master_at_raise: Dict[int, Optional[str]] = {}
        self.init_live_handled: Set[int] = set()
        self.answers: Dict[int, List[Tuple[str, str]]] = {}          # pid -> [(who, how)]
        self.log: List[Tuple[str, int]] = []                         # every answer, in order
        self.init_crash: Optional[Dict[str, Any]] = None
        init = InitiatorCore(MIG, DPID, INIT, self.cands, commit=commit, transfer=transfer,
                             timeout=TIMEOUT, candidate_timeout=CAND_TIMEOUT)
        self.ctl[INIT].core = init
        self.run(INIT, init.start(self.now, gen))

    @property
    def init(self) -> InitiatorCore:
        return self.ctl[INIT].core

    def alive(self) -> List[str]:
        return [n for n, c in self.ctl.items() if c.alive]

    def step_of(self, name: str) -> Optional[Step]:
        core = self.ctl[name].core
        return core.step if core is not None else None

    # -- carrying out actions ---------------------------------------------------------------------
    def run(self, who: str, actions: List[Any]) -> None:
        ctl = self.ctl[who]
        for a in actions:
            if not ctl.alive:
                return
            if isinstance(a, Send):
                if self.ctl[a.to].alive:
                    m = wire.Msg(a.type, MIG, DPID, who, dict(a.body), a.payload, next(self._seq))
                    self.bus.setdefault((who, a.to), deque()).append(wire.encode(m))
            elif isinstance(a, RequestRole):
                ctl.pending += 1
                if who != INIT and a.role is Role.MASTER and ctl.took_over_with_state is None:
                    ctl.took_over_with_state = bool(ctl.core.restored and ctl.core.marked)
                self.bridge.conns[who].up.append(RoleReq(a.role, a.generation_id, a.fenced))
            elif isinstance(a, PlaceMarker):
                self.bridge.conns[who].up.append(FlowMarker(a.tag))
            elif isinstance(a, Standby):
                self.bridge.conns[who].up.append(SetAsync(a.on))
            elif isinstance(a, TakeSnapshot):
                self.tasks.append((who, "snapshot", self._snapshot))
            elif isinstance(a, PublishSnapshot):
                self.store[wire.xfer_key(MIG)] = self.init.snapshot
            elif isinstance(a, Restore):
                self._restore(who, a)
            elif isinstance(a, Release):
                how = "flush" if who != INIT else (
                    "retake" if self.init.state is Mig.RETAKEN else "abort")
                for p in a.msgs:
                    self.answer(who, p, how)
                if a.then_flushed:
                    self.tasks.append((who, "flushed", lambda: self.run(
                        who, ctl.core.flushed(self.now))))
            elif isinstance(a, DropState):
                ctl.app = {}
            elif isinstance(a, Claim):
                if a.force:
                    self.claims[MIG] = a.who
                won = self.claims.setdefault(MIG, a.who) == a.who
                if who != INIT:
                    self.run(who, ctl.core.claim_result(self.now, won))
            elif isinstance(a, Finished):
                ctl.outcome = a.outcome
            else:
                assert isinstance(a, (DropBuffer, Note)), f"the model cannot carry out {a!r}"

    def _snapshot(self) -> None:
        snap, digest = snapshot_of(self.ctl[INIT].app)
        self.run(INIT, self.init.snapshot_ready(self.now, snap, digest))

    def _restore(self, who: str, a: Restore) -> None:
        ctl = self.ctl[who]
        ctl.app = json.loads(self.store[a.key] if a.key else a.snapshot)
        digest = snapshot_of(ctl.app)[1] if who not in self.corrupt else "corrupted"
        gap = tuple(PacketIn(int(raw[2:])) for raw in split_gap(a.gap))
        ctl.custody.update(p.pid for p in gap)
        self.run(who, ctl.core.restored_state(self.now, digest, gap))

    def answer(self, who: str, p: PacketIn, how: str) -> None:
        ctl = self.ctl[who]
        ctl.answered.append(p.pid)
        ctl.custody.add(p.pid)
        ctl.app[str(p.pid % 4)] = p.pid
        self.answers.setdefault(p.pid, []).append((who, how))
        self.log.append((who, p.pid))

    # -- the switch side ------------------------------------------------------------------------
    def raise_packet_in(self) -> int:
        pid = next(self._pid)
        self.raised.append(pid)
        masters = self.bridge.masters()
        self.master_at_raise[pid] = masters[0] if masters else None
        got = self.bridge.broadcast(PacketIn(pid))
        if self.ctl[INIT].alive and self.init.state in (Mig.COMMITTED, Mig.SWITCHED, Mig.RETAKING):
            assert INIT in got, (
                f"packet-in {pid} raised while the initiator is {self.init.state.value} (a standby) "
                f"does not reach it: its connection is {self.bridge.conns[INIT].role.name} "
                "without Standby")
        return pid

    def to_controller(self, who: str) -> None:
        msg = self.bridge.conns[who].down.popleft()
        ctl = self.ctl[who]
        core = ctl.core
        if isinstance(msg, PacketIn):
            self._packet_in(ctl, msg)
        elif isinstance(msg, FlowRemoved):
            if core is not None:
                self.run(who, core.marker_seen(self.now, msg.tag))
        elif isinstance(msg, RoleStatus):
            ctl.believed = msg.role
            if core is not None:
                self.run(who, core.role_status(self.now, msg.role, msg.gen))
        else:
            ctl.pending -= 1
            if isinstance(msg, RoleReply):
                ctl.believed = msg.role
                if core is not None:
                    self.run(who, core.role_confirmed(self.now, msg.role, msg.gen))
            elif core is not None:
                self.run(who, core.role_refused(self.now))
            if ctl.pending == 0 and ctl.held and ctl.alive:
                held, ctl.held = ctl.held, []
                if ctl.believed is Role.MASTER:
                    for p in held:
                        self.answer(who, p, "held")

    def _packet_in(self, ctl: Ctl, p: PacketIn) -> None:
        core = ctl.core
        if ctl.name == INIT and not core.finished:
            self.init_live_handled.add(p.pid)
        if core is not None and core.packet_in(self.now, p):
            ctl.custody.add(p.pid)
        elif ctl.pending:
            ctl.held.append(p)
            ctl.custody.add(p.pid)
        elif ctl.believed is Role.MASTER:
            self.answer(ctl.name, p, "direct")

    # -- the bus ------------------------------------------------------------------------------------
    def deliver_bus(self, src: str, dst: str) -> None:
        m = wire.decode(self.bus[(src, dst)].popleft())
        ctl = self.ctl[dst]
        if dst == INIT:
            self.run(dst, self.init.on_peer(self.now, m))
        elif ctl.core is None:
            if m.type == wire.START:
                ctl.core, actions = CandidateCore.from_start(self.now, dst, m)
                self.run(dst, actions)
                if not self.ctl[INIT].alive:  # the adapter knows the initiator is gone
                    self.run(dst, ctl.core.initiator_gone(self.now))
        else:
            self.run(dst, ctl.core.on_peer(self.now, m))

    # -- crashes and time ---------------------------------------------------------------------------
    def crash(self, who: str) -> None:
        if who == INIT:
            self.init_crash = {"state": self.init.state, "live": not self.init.finished,
                               "ready": {c for c in self.cands if self.ctl[c].alive and self.step_of(c)
                                         in (Step.READY, Step.TAKING, Step.FLUSHING, Step.MASTER)}}
        self.ctl[who].alive = False
        del self.bridge.conns[who]
        for key in [k for k in self.bus if k[1] == who]:
            del self.bus[key]
        self.tasks = [t for t in self.tasks if t[0] != who]
        for n in self.alive():
            core = self.ctl[n].core
            if n == INIT:
                self.run(n, core.peer_gone(self.now, who))
            elif who == INIT and core is not None:
                self.run(n, core.initiator_gone(self.now))

    def tick(self, dt: float) -> None:
        self.now += dt
        for n in self.alive():
            if self.ctl[n].core is not None:
                self.run(n, self.ctl[n].core.tick(self.now))

    # -- scheduling ---------------------------------------------------------------------------------
    def movable(self) -> List[Tuple[str, str, str]]:
        out = []
        for o, c in sorted(self.bridge.conns.items()):
            if c.up:
                out.append(("up", o, ""))
            if c.down:
                out.append(("down", o, ""))
        out += [("bus", s, d) for (s, d), q in sorted(self.bus.items()) if q]
        out += [("task", str(i), label) for i, (_, label, _) in enumerate(self.tasks)]
        return out

    def move(self, kind: str, a: str, b: str) -> None:
        if kind == "up":
            self.bridge.step(a)
        elif kind == "down":
            self.to_controller(a)
        elif kind == "bus":
            self.deliver_bus(a, b)
        else:
            self.tasks.pop(int(a))[2]()

    def play(self, until: Callable[["World"], bool], seed: int = 0, hold: Tuple[str, ...] = (),
             limit: int = 2000) -> None:
        """Random moves, never from the queues named in `hold` (see qname), until `until` holds."""
        rnd = Random(seed)
        for _ in range(limit):
            if until(self):
                return
            moves = [m for m in self.movable() if qname(m) not in hold]
            if not moves:
                break
            self.move(*rnd.choice(moves))
        raise AssertionError("play: the condition never came")

    def quiesce(self, rnd: Random) -> None:
        """Drain everything in an order chosen by rnd, then let every deadline pass; repeat."""
        for _ in range(20):
            for _ in range(5000):
                moves = self.movable()
                if not moves:
                    break
                self.move(*rnd.choice(moves))
            else:
                raise AssertionError("messages keep flowing")
            self.tick(TIMEOUT + 1.0)
            if not self.movable():
                return
        raise AssertionError("no quiescence after 20 rounds of deadlines")


# -- the properties ---------------------------------------------------------------------------------

def excused_duplicate(w: World, who_how: List[Tuple[str, str]]) -> bool:
    """The duplicates the protocol cannot avoid (it chooses twice over never):
    * the initiator's retake releases its whole buffer, although the winner (dead, or only
      suspected after COMMIT_TIMEOUT_S) may have answered some of it;
    * a candidate that rescues without the state has no cut point: what it held while its MASTER
      request was in flight may have been answered by the initiator before that died."""
    if len(who_how) != 2:
        return False
    retake = (INIT, "retake") in who_how and any(
        x == w.init.winner and how in ("flush", "direct") for x, how in who_how)
    rescue = (INIT, "direct") in who_how and not w.ctl[INIT].alive and any(
        x != INIT and how == "held" and not w.ctl[x].took_over_with_state for x, how in who_how)
    return retake or rescue


def check_step(w: World) -> None:
    """Safety, after every step."""
    assert len(w.bridge.masters()) <= 1, w.bridge.masters()
    for pid, who_how in w.answers.items():
        if len(who_how) < 2 or excused_duplicate(w, who_how):
            continue
        raise AssertionError(f"packet-in {pid} answered {len(who_how)} times: {who_how}")
    for ctl in w.ctl.values():
        assert ctl.answered == sorted(ctl.answered), f"{ctl.name} answered out of order"


def expected_masters(w: World) -> Tuple[Set[Optional[str]], str]:
    """Who may be MASTER at quiescence, and why."""
    init, crash = w.init, w.init_crash
    winner = init.winner if init.outcome == "committed" else None
    if w.ctl[INIT].alive:
        assert init.finished, f"initiator stuck {init.state.value}"
        if winner is None:
            return {INIT}, f"initiator {init.outcome}"
        return {winner if w.ctl[winner].alive else None}, "committed"
    assert crash is not None
    if not crash["live"]:  # the initiator finished, then crashed: a plain crash of the master
        if winner is not None:
            return {winner if w.ctl[winner].alive else None}, "committed, then the initiator died"
        return {None}, f"{init.outcome}, then the initiator (master) died"
    anyone: Set[Optional[str]] = {None, *w.cands}
    holder = w.claims.get(MIG)
    if any(w.ctl[c].alive for c in crash["ready"]) and (holder is None or w.ctl[holder].alive):
        return anyone - {None}, "initiator died mid-migration, a candidate had the state"
    return anyone, "initiator died mid-migration, nobody had the state"


def check_quiescent(w: World) -> None:
    check_step(w)
    masters = w.bridge.masters()
    m = masters[0] if masters else None
    want, why = expected_masters(w)
    assert m in want, f"master is {m}, expected one of {sorted(map(str, want))} ({why}): {describe(w)}"
    assert m in (None, INIT) or w.step_of(m) is Step.MASTER, describe(w)
    for n in w.alive():
        ctl, conn = w.ctl[n], w.bridge.conns[n]
        assert n == INIT or w.step_of(n) in (None, Step.MASTER, Step.OUT), describe(w)
        assert not ctl.held, f"{n} still holds packet-ins"
        core = ctl.core
        if core is not None:
            assert not core.buffer and not getattr(core, "gap", ()), f"{n} keeps a buffer"
        assert not conn.slave_async, f"{n} is left in standby: {describe(w)}"
        if n == m:
            continue
        assert conn.role is Role.SLAVE, f"{n} ({ctl.outcome or 'idle'}) is {conn.role.name}"
        if ctl.app:
            raise AssertionError(f"{n} ({ctl.outcome}) keeps state {ctl.app}")
    if m is not None and m != INIT and w.ctl[m].took_over_with_state:
        fold: Dict[str, int] = {}  # what the initiator answered (before F), then m
        for who, pid in w.log:
            if who in (INIT, m):
                fold[str(pid % 4)] = pid
        if w.ctl[m].app != fold:
            raise AssertionError(f"master {m}'s state {w.ctl[m].app} is not every answer folded "
                                 f"in order {fold}: {describe(w)}")
    check_owed(w, m)
    json.dumps(w.init.record())


def check_owed(w: World, m: Optional[str]) -> None:
    init_ok = w.ctl[INIT].alive or bool(m and m != INIT and w.ctl[m].took_over_with_state)
    winner = w.init.winner if w.init.outcome == "committed" else None
    for pid in w.raised:
        # (after DRAINED the initiator drops what it buffered while the winner was master: the
        # winner's own, lost if it dies; B covers them while it lives)
        a = pid in w.init_live_handled and init_ok and w.master_at_raise[pid] != winner
        b = w.master_at_raise[pid] is not None and w.ctl[w.master_at_raise[pid]].alive
        c = m is not None and pid in w.ctl[m].custody
        if (a or b or c) and pid not in w.answers:
            raise AssertionError(f"packet-in {pid} owed ({'A' * a}{'B' * b}{'C' * c}) but never "
                                 f"answered: {describe(w)}")


def describe(w: World) -> str:
    cores = {n: (c.core.state.value if n == INIT else c.core.step.value) if c.core else "-"
             for n, c in w.ctl.items()}
    return (f"alive={w.alive()} cores={cores} outcomes={ {n: c.outcome for n, c in w.ctl.items()} }"
            f" claim={w.claims} roles={ {o: c.role.name for o, c in w.bridge.conns.items()} }")


# -- example runs on the model ----------------------------------------------------------------------

@pytest.mark.parametrize("k, commit, transfer", [(1, "phase2", "copy"), (3, "phase2", "shared"),
                                                 (2, "phase1", "copy")])
def test_migrations_without_faults_commit_and_answer_every_packet_in_once(
        k: int, commit: str, transfer: str) -> None:
    for seed in range(30):
        w, rnd = World(k, commit, transfer), Random(seed)
        for _ in range(200):
            if rnd.random() < 0.1:
                w.raise_packet_in()
            moves = w.movable()
            if not moves:
                break
            w.move(*rnd.choice(moves))
        w.quiesce(rnd)
        check_quiescent(w)
        assert w.init.outcome == "committed", (seed, w.init.reason)
        assert sorted(w.answers) == w.raised


def test_commit_timeout_on_a_slow_winner_answers_its_buffer_twice() -> None:
    """The at-least-once window: ROLE_STATUS is late, the initiator suspects the winner and retakes
    (fenced), then releases its whole buffer although the winner already answered it."""
    w = World(1)
    w.play(lambda w: w.init.state is Mig.COMMITTED)
    pid = w.raise_packet_in()
    w.play(lambda w: w.step_of("b") is Step.MASTER, hold=("down a",))
    w.tick(COMMIT_TIMEOUT_S)
    assert w.init.state is Mig.RETAKING
    w.quiesce(Random(0))
    assert w.answers[pid] == [("b", "flush"), ("a", "retake")]
    assert w.init.outcome == "retaken" and w.bridge.masters() == ["a"]
    check_quiescent(w)
    assert w.ctl["b"].app == {}, "the demoted winner dropped its state"


def test_standby_is_in_force_before_the_winner_can_demote_the_initiator() -> None:
    """Standby (a plain SET_ASYNC) goes out at start, before any marker on the same connection,
    and COMMIT needs a marker: so however the winner's MASTER request races the initiator's
    connection, packet-ins raised after the demotion still reach the initiator. (Found by the
    machine when Standby went out with COMMIT: they reached only the winner, lost if it died.)"""
    for seed in range(20):
        w = World(1)
        w.play(lambda w: w.init.state is Mig.COMMITTED, seed)
        w.play(lambda w: w.bridge.masters() == ["b"], seed, hold=("up a", "down a"))
        w.raise_packet_in()  # asserts that it reaches the initiator
        w.crash("b")
        w.quiesce(Random(seed))
        check_quiescent(w)
        assert w.init.outcome == "retaken" and sorted(w.answers) == w.raised


def test_candidate_rolled_back_by_a_lost_message_cannot_rescue_after_the_end() -> None:
    """Cancelled (or aborted, or retaken) with the candidate READY and its ROLLBACK lost; the
    initiator goes on as master, answers packet-ins the candidate also buffers, then crashes.
    (Was a bug: the candidate claimed, won, and rescued with the stale state, answering its buffer
    a second time.) The initiator now takes the claim for itself when a migration ends other than
    committed, so the late rescue loses."""
    w = World(1)
    w.play(lambda w: w.step_of("b") is Step.READY)
    w.run(INIT, w.init.cancel(w.now))
    w.bus[(INIT, "b")].clear()                       # the ROLLBACK is lost
    pid = w.raise_packet_in()
    w.play(lambda w: pid in w.answers and not w.bridge.conns["b"].down, hold=("bus b>a",))
    w.crash(INIT)
    w.quiesce(Random(0))
    check_quiescent(w)
    assert w.claims[MIG] == INIT and w.ctl["b"].outcome == "rolled back"


def test_initiator_dies_after_its_retake_and_the_fenced_winner_takes_over() -> None:
    """COMMIT reached the winner (TAKING, MASTER gen+1 in flight); the COMMIT timeout fires and the
    initiator's fenced MASTER gen+2 reaches the switch first; then the initiator crashes.
    (Was a bug: the winner ignored initiator_gone while TAKING, its request was refused as stale
    and it went OUT: no master.) The refused winner now claims (the claim still holds it) and
    asks MASTER unfenced."""
    w = World(1)
    w.play(lambda w: w.init.state is Mig.COMMITTED)
    w.play(lambda w: w.step_of("b") is Step.TAKING, hold=("up b",))
    w.tick(COMMIT_TIMEOUT_S)
    assert [r.gen for r in w.bridge.conns[INIT].up] == [7]   # MASTER, fenced, gen + 2
    w.bridge.step(INIT)
    w.crash(INIT)
    w.quiesce(Random(0))
    check_quiescent(w)
    assert w.bridge.masters() == ["b"] and w.ctl["b"].outcome == "rescued"


def test_winner_slow_to_flush_then_dying_loses_nothing() -> None:
    """The winner's MASTER took effect (the initiator is SWITCHED) but the winner is slow (a
    SIGSTOP glitch) and has not answered its buffer when the SWITCHED deadline passes; then it
    dies. (Was a bug: the initiator finished "as END" on the deadline, dropped its buffer and
    stepped down: the packet-ins were lost and the switch had no master.) It now asks the winner
    (END_QUERY) and keeps the standby and the buffer, so the winner's death makes it retake."""
    w = World(1)
    w.play(lambda w: w.step_of("b") is Step.TAKING)
    pid = w.raise_packet_in()
    w.play(lambda w: w.init.state is Mig.SWITCHED, hold=("down b",))
    w.tick(TIMEOUT)
    assert w.init.state is Mig.SWITCHED and w.answers == {}
    assert [wire.decode(m).type for m in w.bus[(INIT, "b")]][-1:] == [wire.END_QUERY]
    w.crash("b")
    w.quiesce(Random(0))
    check_quiescent(w)
    assert w.answers[pid] == [(INIT, "retake")] and w.init.outcome == "retaken"


def test_winner_dying_between_end_migration_and_drained_loses_nothing() -> None:
    """END_MIGRATION (the migration's end) arrived, the winner has not answered its buffer, and
    dies: the initiator, still the standby with its copy of the buffer, retakes and answers it."""
    w = World(1)
    w.play(lambda w: w.step_of("b") is Step.TAKING)
    pid = w.raise_packet_in()  # buffered by both
    w.play(lambda w: "end" in w.init.t and w.init.state is Mig.SWITCHED, hold=("task",))
    assert w.step_of("b") is Step.FLUSHING, "DRAINED not sent: its flush task is held"
    w.crash("b")
    w.quiesce(Random(0))
    check_quiescent(w)
    assert w.init.outcome == "retaken" and (INIT, "retake") in w.answers[pid]


def test_a_lost_drained_is_asked_for_again() -> None:
    """DRAINED lost on the bus: the winner answers END_QUERY with it, and the migration
    commits; nothing is answered twice."""
    w = World(1)
    w.play(lambda w: w.step_of("b") is Step.MASTER and w.init.state is Mig.SWITCHED
           and bool(w.bus.get(("b", INIT))))
    w.bus[("b", INIT)].clear()
    w.tick(TIMEOUT)
    w.quiesce(Random(0))
    check_quiescent(w)
    assert w.init.outcome == "committed" and "query" in w.init.t


# -- the state machine ------------------------------------------------------------------------------

def _cand_in(w: World, *steps: Step) -> bool:
    return any(w.ctl[c].alive and w.step_of(c) in steps for c in w.cands)


MILESTONES: Dict[str, Callable[[World], bool]] = {
    "candidate equal": lambda w: _cand_in(w, Step.EQUAL),
    "initiator frozen": lambda w: w.init.frozen,
    "candidate ready": lambda w: _cand_in(w, Step.READY),
    "initiator committed": lambda w: w.init.state is not Mig.RUNNING,
    "candidate taking": lambda w: _cand_in(w, Step.TAKING, Step.FLUSHING),
    "initiator switched": lambda w: w.init.state not in (Mig.RUNNING, Mig.COMMITTED),
    "candidate master": lambda w: _cand_in(w, Step.MASTER),
}


class ErcMigration(RuleBasedStateMachine):
    """Arbitrary interleavings, bus losses, crashes, deadlines and cancels; see the module
    docstring for the model and the properties."""

    def __init__(self) -> None:
        super().__init__()
        self.w: World = None  # type: ignore[assignment]

    @initialize(k=st.integers(1, 3), commit=st.sampled_from(["phase2", "phase1"]),
                transfer=st.sampled_from(["copy", "shared"]),
                gen=st.sampled_from([5, GEN_MASK - 1, GEN_MASK, (1 << 63) - 1]),
                corrupt=st.frozensets(st.sampled_from(CANDS), max_size=1))
    def setup(self, k: int, commit: str, transfer: str, gen: int, corrupt: FrozenSet[str]) -> None:
        self.w = World(k, commit, transfer, gen, corrupt)

    @rule()
    def packet_arrives_at_the_switch(self) -> None:
        self.w.raise_packet_in()

    @precondition(lambda self: bool(self.w.movable()))
    @rule(data=st.data())
    def deliver_one(self, data: st.DataObject) -> None:
        self.w.move(*data.draw(st.sampled_from(self.w.movable()), label="move"))

    @precondition(lambda self: bool(self.w.movable()))
    @rule(seed=st.integers(0, 2 ** 16), n=st.integers(1, 40))
    def deliver_many(self, seed: int, n: int) -> None:
        rnd = Random(seed)
        for _ in range(n):
            moves = self.w.movable()
            if not moves:
                return
            self.w.move(*rnd.choice(moves))

    @precondition(lambda self: bool(self.w.movable()))
    @rule(milestone=st.sampled_from(sorted(MILESTONES)), seed=st.integers(0, 2 ** 16))
    def run_until(self, milestone: str, seed: int) -> None:
        """Lands right at a phase boundary, where crashes, losses and deadlines matter most."""
        try:
            self.w.play(MILESTONES[milestone], seed, limit=500)
        except AssertionError:
            pass  # never reached from here: fine, the moves were made

    @precondition(lambda self: any(self.w.bus.values()))
    @rule(data=st.data())
    def bus_loses_a_message(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(k for k, q in self.w.bus.items() if q)), label="q")
        self.w.bus[key].popleft()

    @precondition(lambda self: len(self.w.alive()) > 1)
    @rule(data=st.data())
    def controller_crashes(self, data: st.DataObject) -> None:
        self.w.crash(data.draw(st.sampled_from(self.w.alive()), label="who"))

    @rule(dt=st.sampled_from([0.1, RESCUE_GRACE_S, 1.0, COMMIT_TIMEOUT_S, CAND_TIMEOUT, TIMEOUT]))
    def time_passes(self, dt: float) -> None:
        self.w.tick(dt)

    @precondition(lambda self: self.w.ctl[INIT].alive and self.w.init.state is Mig.RUNNING)
    @rule(dice=st.integers(0, 4))
    def operator_cancels(self, dice: int) -> None:
        if dice == 4:  # rare: a cancel ends the interesting part of a run
            self.w.run(INIT, self.w.init.cancel(self.w.now))

    @rule(seed=st.integers(0, 2 ** 16))
    def everything_settles(self, seed: int) -> None:
        self.w.quiesce(Random(seed))
        check_quiescent(self.w)

    @invariant()
    def safety(self) -> None:
        if self.w is not None:
            check_step(self.w)

    def teardown(self) -> None:
        if self.w is not None:
            self.w.quiesce(Random(0))
            check_quiescent(self.w)
            event(f"initiator {self.w.init.outcome or self.w.init.state.value}")


TestErcMigration = ErcMigration.TestCase
TestErcMigration.settings = settings(
    # ERC_MODEL_EXAMPLES=10000 for a long search (the suite runs 400)
    max_examples=int(os.environ.get("ERC_MODEL_EXAMPLES", "400")), stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
