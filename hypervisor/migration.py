"""Control-path migration between hypervisor instances (the distributed-hypervisor paper, sec. IV),
as three pure state machines: the target instance, the initial instance, and the proxy's route
for one tenant connection. No I/O: events come in with `now`, effects go out, in order.

The paper's protocol: the target connects to the switch's passive port (it must ask for
asynchronous messages, PLATFORM.md) and discards what the switch sends; it asks the proxy to
route the tenant's controller messages to it, buffers them, adds and deletes a dummy flow with a
reserved cookie; the FLOW_REMOVED reaching both instances is the marker: the initial gives the
switch up, the target flushes its buffer in order and takes over.

What this changes and adds so that no tenant message is lost, duplicated or reordered, and the
hand-over costs one trip less:
- The initial puts the marker down. Tenant messages the initial forwarded travel on another
  connection than the target's; the switch may run them after the target's flush. So when the
  target asks, the proxy routes the tenant to it and puts DRAIN on the initial's connection
  behind the last message it forwarded there; the initial adds and deletes the dummy flow on its
  own switch connection, behind everything it forwarded. The switch runs a connection's messages
  in order, so when the FLOW_REMOVED reaches the target, everything the initial sent has run:
  the target flushes its buffer. (The paper's target adds the marker itself; here it does so
  only when the initial is gone: the proxy then tells it REROUTED.)
- One upward stream. Up to the marker the initial relays the switch's messages, from it on the
  target. The proxy holds what the target relays until the initial's HANDED_OVER (sent when it
  saw the marker, behind everything it relayed before), so the tenant sees one ordered stream.
- A replay log. The proxy keeps what it routed to the target until the target's COMMITTED (its
  buffer flushed and a barrier answered). If the target fails or gives up first, the proxy
  RESUMEs the initial and sends it the log: the initial still holds the switch. A target lost
  after COMMITTED has run everything: the initial is resumed without a replay.
- The initial failing: the proxy takes its loss as HANDED_OVER and tells the target REROUTED,
  so the target marks and completes; what the tenant sends while no instance serves it waits
  in the log for the next take-over.
- Every marker, barrier and control message names its migration: the adapter puts the id in the
  dummy flow's cookie and keeps its barriers' xids, so a marker or reply of another tenant's
  migration on the same switch, or of an aborted one, is never taken for this one's. A control
  message of a migration that already ended is ignored; of an unknown one, a ProtocolError.

One set of machines per (switch, tenant connection): the adapter hands each tenant's machines
the switch messages its slice owns, and each marker and barrier reply to the machine it names.
`StopServing` means this tenant's traffic on that switch connection; the adapter closes the
connection when no tenant is left on it.

Left open (documented, not hidden): a target that fails after the marker and before COMMITTED
may have flushed part of its buffer, which the replay then sends again (and the switch may run
the two out of order); when a target fails after the marker, switch messages around the
initial's RESUME may reach the tenant twice (the target relayed them, the resumed initial
relays them again) or not at all (the initial discarded them before it was resumed); a target
lost once the migration is over takes the tenant's hypervisor with it (CloseTenant);
per-connection switch state a tenant set through the initial (SET_CONFIG, SET_ASYNC, an
open bundle) is not carried to the target's connection by this core.

Target (one per migration):

| state      | event                      | effects                                      | next       |
|------------|----------------------------|----------------------------------------------|------------|
| IDLE       | begin                      | ConnectSwitch                                | CONNECTING |
| CONNECTING | switch_ready               | ToProxy(TakeOver)                            | ASKING     |
| ASKING,    | a tenant's m               | (buffered)                                   | same       |
|  MARKING   |                            |                                              |            |
| ASKING     | Rerouted (the initial is   | ToSwitch(MarkAdd), ToSwitch(MarkDelete)      | MARKING    |
|            |  gone: mark it yourself)   |                                              |            |
| ASKING,    | marker (its migration's)   | ToSwitch(each buffered m), ToSwitch(Barrier) | COMMITTING |
|  MARKING   |                            |                                              |            |
| COMMITTING | its barrier's reply        | ToProxy(Committed)                           | ACTIVE     |
| COMMITTING,| a tenant's m               | ToSwitch(m)                                  | same       |
|  ACTIVE    | from_switch(m)             | ToProxy(Upstream(m))                         | same       |
| before     | from_switch(m)             | (discarded: not ours yet)                    | same       |
|  COMMITTING|                            |                                              |            |
| CONNECTING | switch or proxy lost,      | [ToProxy(Abort) once it asked, and not to a  | FAILED     |
|  ..COMMIT. |  deadline passed           |  lost proxy], StopServing                    |            |
| ASKING..   | Abort (from the proxy)     | StopServing                                  | FAILED     |
|  COMMITTING|                            |                                              |            |
| FAILED     | anything                   | - (the proxy goes back on its Abort)         | FAILED     |
| ACTIVE     | anything else              | - (it serves; a loss is the adapter's)       | ACTIVE     |

Initial (per switch and tenant; one migration at a time):

| state      | event                      | effects                                      | next        |
|------------|----------------------------|----------------------------------------------|-------------|
| SERVING    | Drain                      | ToSwitch(MarkAdd), ToSwitch(MarkDelete)      | DRAINED     |
| DRAINED    | marker (this migration's)  | ToProxy(HandedOver)                          | HANDED_OVER |
| DRAINED,   | Release                    | StopServing                                  | RELEASED    |
|  HANDED_OV.|                            |                                              |             |
| DRAINED,   | Resume                     | - (the migration is over)                    | SERVING     |
|  HANDED_OV.|                            |                                              |             |
| SERVING,   | a tenant's m               | ToSwitch(m)                                  | same        |
|  DRAINED   | from_switch(m)             | ToProxy(Upstream(m))                         | same        |
| HANDED_OV. | from_switch(m)             | (discarded: the target's now)                | same        |

Proxy route (one tenant connection; `serving`: initial, target or none):

| state     | event                         | effects                                       | next      |
|-----------|-------------------------------|-----------------------------------------------|-----------|
| DIRECT    | TakeOver (from the target)    | ToInitial(Drain)                              | REROUTED  |
| DIRECT    | TakeOver, the initial lost    | ToTarget(Rerouted), ToTarget(each logged m)   | REROUTED  |
|           |                               |   (nothing to drain; handed over)             |           |
| DIRECT    | a tenant's m                  | To<serving>(m); none: dropped; the initial    | DIRECT    |
|           |                               |   lost: kept in the log                       |           |
| REROUTED  | a tenant's m                  | ToTarget(m), kept in the log until Committed  | same      |
| REROUTED  | upstream from the target      | (held until handed over)                      | same      |
| any       | upstream from the initial     | ToTenant(m) (not once the target serves)      | same      |
| REROUTED  | HandedOver                    | ToTenant(each held m); done if committed      | REROUTED  |
| REROUTED  | the initial lost              | ToTarget(Rerouted) unless committed,          | REROUTED  |
|           |                               |   ToTenant(each held m); done if committed    |           |
| REROUTED  | Committed                     | (log dropped); done if handed over            | REROUTED  |
| REROUTED  | not committed by twice the    | ToInitial(Resume), ToInitial(each logged m),  | DIRECT    |
|           |  deadline (a hung target)     |   ToTarget(Abort)                             |           |
| REROUTED  | committed, not handed over by | ToTenant(each held m); the target's words     | REROUTED  |
|           |  the deadline                 |   pass from now on (late: order across the    |           |
|           |                               |   two may break; nothing is dropped)          |           |
| REROUTED  | done                          | ToInitial(Release) (unless lost)              | DIRECT    |
|           |                               |   (serving: the target)                       |           |
| REROUTED  | target lost or Abort, before  | ToInitial(Resume), ToInitial(each logged m);  | DIRECT    |
|           |  Committed                    |   the initial lost too: CloseTenant (none)    |           |
| REROUTED  | target lost after Committed   | the tenant's m kept; once handed over:        | DIRECT    |
|           |                               |   ToInitial(Resume), ToInitial(each kept m)   |           |
|           |                               |   (serving: the initial)                      |           |
| DIRECT    | the lost initial re-attached  | ToInitial(each logged m) (serving: initial)   | DIRECT    |
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Set

DEADLINE_S = 5.0

# Target states
IDLE, CONNECTING, ASKING, MARKING, COMMITTING, ACTIVE, FAILED = (
    "idle", "connecting", "asking", "marking", "committing", "active", "failed")
# Initial states
SERVING, DRAINED, HANDED_OVER, RELEASED = "serving", "drained", "handed_over", "released"
# Route states
DIRECT, REROUTED = "direct", "rerouted"

COMMIT = "commit"   # the barrier kind


class ProtocolError(Exception):
    """A peer sent what the protocol does not allow in this state."""


# -- messages between proxy and instances (in band, on their OpenFlow connection) ---------------
@dataclass(frozen=True)
class Control:
    mid: str


class TakeOver(Control): pass            # noqa: E701  target -> proxy
class Drain(Control): pass               # noqa: E701  proxy -> initial: put the marker down
class Rerouted(Control): pass            # noqa: E701  proxy -> target: the initial is gone,
#                                                      put the marker down yourself
class HandedOver(Control): pass          # noqa: E701  initial -> proxy
class Committed(Control): pass           # noqa: E701  target -> proxy
class Release(Control): pass             # noqa: E701  proxy -> initial
class Resume(Control): pass              # noqa: E701  proxy -> initial
class Abort(Control): pass               # noqa: E701  either way


@dataclass(frozen=True)
class Upstream:
    """A switch message for the tenant, relayed by an instance to the proxy."""

    msg: Any


# -- what goes to the switch (the adapter encodes them) -------------------------------------------
@dataclass(frozen=True)
class Barrier:
    """A barrier of the protocol's own; its reply comes back to `barrier_reply` as this object."""

    kind: str
    mid: str


@dataclass(frozen=True)
class MarkAdd:
    """The dummy flow, its cookie reserved and naming the migration, with SEND_FLOW_REM."""

    mid: str


@dataclass(frozen=True)
class MarkDelete:
    """Its delete: the switch's FLOW_REMOVED of it is the marker, `marker(mid)`."""

    mid: str


# -- effects -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ToSwitch:
    msg: Any


@dataclass(frozen=True)
class ToProxy:
    msg: Any


@dataclass(frozen=True)
class ToInitial:
    msg: Any


@dataclass(frozen=True)
class ToTarget:
    msg: Any


@dataclass(frozen=True)
class ToTenant:
    msg: Any


@dataclass(frozen=True)
class ConnectSwitch:
    """Connect to the switch's passive port and ask it for asynchronous messages."""


@dataclass(frozen=True)
class StopServing:
    """This tenant's traffic on the switch connection ends (the adapter closes the connection
    when no tenant is left on it)."""


@dataclass(frozen=True)
class CloseTenant:
    """The proxy closes the tenant's connection: no instance is left to serve it."""


Effects = List[Any]


class _Ids:
    """The migration a machine is in, and those it has left: a late word of one of those is
    ignored, one of a migration never heard of is the peer's error."""

    def __init__(self) -> None:
        self.mid: Optional[str] = None
        self.past: Set[str] = set()

    def current(self, msg: Control) -> bool:
        if msg.mid == self.mid:
            return True
        if msg.mid in self.past:
            return False
        raise ProtocolError(f"{type(msg).__name__} for migration {msg.mid!r}, "
                            f"in {self.mid!r}")

    def start(self, mid: str) -> None:
        self.mid = mid

    def end(self) -> None:
        if self.mid is not None:
            self.past.add(self.mid)
        self.mid = None


@dataclass
class Target:
    mid: str
    deadline_s: float = DEADLINE_S
    state: str = IDLE
    buffer: List[Any] = field(default_factory=list)
    discarded: int = 0
    deadline: float = 0.0

    def begin(self, now: float) -> Effects:
        self._in(IDLE, "begin")
        self.state, self.deadline = CONNECTING, now + self.deadline_s
        return [ConnectSwitch()]

    def switch_ready(self, now: float) -> Effects:
        if self.state == FAILED:
            return []  # it gave up meanwhile
        self._in(CONNECTING, "switch_ready")
        self.state = ASKING
        return [ToProxy(TakeOver(self.mid))]

    def from_proxy(self, msg: Any, now: float) -> Effects:
        """A control message or a tenant's message from the proxy."""
        if isinstance(msg, Control) and msg.mid != self.mid:
            raise ProtocolError(f"target of {self.mid!r} got {msg!r}")
        if self.state in (FAILED, ACTIVE) and isinstance(msg, Control):
            return []  # in flight when it gave up (the proxy goes back on its Abort)
        if isinstance(msg, Rerouted):
            if self.state != ASKING:
                return []  # it saw the initial's marker first
            self.state = MARKING
            return [ToSwitch(MarkAdd(self.mid)), ToSwitch(MarkDelete(self.mid))]
        if isinstance(msg, Abort):
            return self._fail(tell_proxy=False)
        if isinstance(msg, Control):
            raise ProtocolError(f"target got {type(msg).__name__}")
        if self.state in (ASKING, MARKING):
            self.buffer.append(msg)
            return []
        if self.state in (COMMITTING, ACTIVE):
            return [ToSwitch(msg)]
        if self.state == FAILED:
            return []
        raise ProtocolError(f"a tenant's message reached the target in state {self.state}")

    def marker(self, mid: str, now: float) -> Effects:
        if mid != self.mid or self.state not in (ASKING, MARKING):
            return []  # another migration's, or one it no longer waits for
        self.state = COMMITTING
        out: Effects = [ToSwitch(m) for m in self.buffer]
        self.buffer = []
        return out + [ToSwitch(Barrier(COMMIT, self.mid))]

    def barrier_reply(self, barrier: Barrier, now: float) -> Effects:
        if barrier == Barrier(COMMIT, self.mid) and self.state == COMMITTING:
            self.state = ACTIVE
            return [ToProxy(Committed(self.mid))]
        return []

    def from_switch(self, msg: Any, now: float) -> Effects:
        if self.state in (COMMITTING, ACTIVE):
            return [ToProxy(Upstream(msg))]
        self.discarded += 1
        return []

    def lost(self, peer: str, now: float) -> Effects:
        """The connection to `peer` ("switch" or "proxy") is gone."""
        if self.state in (ACTIVE, FAILED, IDLE):
            return []
        return self._fail(tell_proxy=peer != "proxy")

    def tick(self, now: float) -> Effects:
        if self.state in (CONNECTING, ASKING, MARKING, COMMITTING) and now >= self.deadline:
            return self._fail(tell_proxy=True)
        return []

    def _fail(self, tell_proxy: bool) -> Effects:
        asked = self.state not in (IDLE, CONNECTING)
        self.state, self.buffer = FAILED, []
        return ([ToProxy(Abort(self.mid))] if tell_proxy and asked else []) + [StopServing()]

    def _in(self, state: str, event: str) -> None:
        if self.state != state:
            raise ProtocolError(f"target: {event} in state {self.state}")


@dataclass
class Initial:
    state: str = SERVING
    ids: _Ids = field(default_factory=_Ids)
    discarded: int = 0

    def from_proxy(self, msg: Any, now: float) -> Effects:
        if isinstance(msg, Control) and msg.mid in self.ids.past:
            return []  # late: of a migration that is over (or that it took over as the target)
        if isinstance(msg, Drain):
            if self.state != SERVING:
                raise ProtocolError(f"initial: drain in state {self.state}")
            self.state = DRAINED
            self.ids.start(msg.mid)
            return [ToSwitch(MarkAdd(msg.mid)), ToSwitch(MarkDelete(msg.mid))]
        if isinstance(msg, Resume):
            if self.ids.current(msg) and self.state in (DRAINED, HANDED_OVER):
                self.state = SERVING
                self.ids.end()
            return []
        if isinstance(msg, Release):
            if not self.ids.current(msg):
                return []
            if self.state not in (DRAINED, HANDED_OVER):
                raise ProtocolError(f"initial: release in state {self.state}")
            self.state = RELEASED
            self.ids.end()
            return [StopServing()]
        if isinstance(msg, Control):
            raise ProtocolError(f"initial got {type(msg).__name__}")
        if self.state in (HANDED_OVER, RELEASED):
            raise ProtocolError(f"a tenant's message reached the initial in state {self.state}")
        return [ToSwitch(msg)]

    def barrier_reply(self, barrier: Barrier, now: float) -> Effects:
        return []  # the initial sends none of its own

    def marker(self, mid: str, now: float) -> Effects:
        if self.state != DRAINED or mid != self.ids.mid:
            return []  # another migration's, or one that is over
        self.state = HANDED_OVER
        return [ToProxy(HandedOver(mid))]

    def from_switch(self, msg: Any, now: float) -> Effects:
        if self.state in (HANDED_OVER, RELEASED):
            self.discarded += 1
            return []
        return [ToProxy(Upstream(msg))]


@dataclass
class Route:
    """The proxy's side of one tenant connection."""

    deadline_s: float = DEADLINE_S
    state: str = DIRECT
    serving: str = "initial"
    ids: _Ids = field(default_factory=_Ids)
    log: List[Any] = field(default_factory=list)
    held: List[Any] = field(default_factory=list)
    handed: bool = False
    committed: bool = False
    initial_gone: bool = False
    target_gone: bool = False
    late: bool = False
    deadline: float = 0.0

    def from_tenant(self, msg: Any, now: float) -> Effects:
        if self.state == DIRECT:
            if self.serving == "none":
                return []
            if self.serving == "initial" and self.initial_gone:
                self.log.append(msg)  # for the instance that will take the tenant over
                return []
            return [ToInitial(msg) if self.serving == "initial" else ToTarget(msg)]
        if self.target_gone:  # after it committed: for the initial, resumed once handed over
            self.log.append(msg)
            return []
        if not self.committed:
            self.log.append(msg)
        return [ToTarget(msg)]

    def from_target(self, msg: Any, now: float) -> Effects:
        if isinstance(msg, TakeOver):
            if self.state != DIRECT or self.serving != "initial":
                raise ProtocolError(f"proxy: take-over in state {self.state}/{self.serving}")
            self.ids.start(msg.mid)
            self.state, self.deadline = REROUTED, now + 2 * self.deadline_s
            self.held, self.handed, self.committed, self.target_gone = [], False, False, False
            self.late = False
            if self.initial_gone:  # a take-over of a dead instance's tenant: nothing to drain,
                self.handed = True   # the target marks; what the tenant sent meanwhile first
                return [ToTarget(Rerouted(msg.mid))] + [ToTarget(m) for m in self.log]
            self.log = []
            return [ToInitial(Drain(msg.mid))]
        if isinstance(msg, Control) and not self.ids.current(msg):
            return []
        if isinstance(msg, Committed):
            if self.state != REROUTED:
                raise ProtocolError(f"proxy: committed in state {self.state}")
            self.committed, self.log = True, []
            self.deadline = now + self.deadline_s  # for the initial's hand-over
            return self._maybe_done()
        if isinstance(msg, Abort):
            if self.committed:
                raise ProtocolError("proxy: abort after committed")
            return self._back(tell_target=False)
        if isinstance(msg, Control):
            raise ProtocolError(f"proxy got {type(msg).__name__} from the target")
        if isinstance(msg, Upstream):
            if self.state == REROUTED and not self.handed and not self.late:
                self.held.append(msg.msg)
                return []
            if self.state == DIRECT and self.serving != "target":
                return []  # an aborted target's late word
            return [ToTenant(msg.msg)]
        raise ProtocolError(f"proxy: {msg!r} from the target")

    def from_initial(self, msg: Any, now: float) -> Effects:
        if isinstance(msg, Upstream):
            if self.state == DIRECT and self.serving == "target":
                return []  # a released initial's late word
            return [ToTenant(msg.msg)]
        if not isinstance(msg, Control):
            raise ProtocolError(f"proxy: {msg!r} from the initial")
        if not self.ids.current(msg):
            return []
        if isinstance(msg, HandedOver) and self.state == REROUTED:
            return self._handed()
        raise ProtocolError(f"proxy: {type(msg).__name__} from the initial in {self.state}")

    def lost(self, peer: str, now: float) -> Effects:
        """The connection to the "initial" or "target" instance is gone."""
        if peer == "initial" and self.serving == "initial":
            self.initial_gone = True
        if self.state == DIRECT:
            if self.serving == peer:
                self.serving = "none" if peer == "target" else self.serving
                return [CloseTenant()] if peer == "target" else []
            return []
        if peer == "target":
            if not self.committed:
                return self._back(tell_target=False)
            self.target_gone = True
            return self._maybe_done()
        if self.handed:
            return []
        # it may have died before putting the marker down: the target puts its own
        out: Effects = [] if self.committed else [ToTarget(Rerouted(self.ids.mid or ""))]
        return out + self._handed()

    def reattached(self, now: float) -> Effects:
        """The instance that served the tenant is back (its proxy link broke and was made
        again): it serves again, and what the tenant sent meanwhile goes to it first."""
        if self.state != DIRECT or not self.initial_gone:
            raise ProtocolError(f"proxy: re-attach in state {self.state}, "
                                f"the initial {'lost' if self.initial_gone else 'present'}")
        self.initial_gone, self.serving, log, self.log = False, "initial", self.log, []
        return [ToInitial(m) for m in log]

    def tick(self, now: float) -> Effects:
        if now < self.deadline:
            return []
        if self.state == REROUTED and not self.committed:  # a hung target: go back
            return self._back(tell_target=True)
        if self.state == REROUTED and self.committed and not self.handed and not self.late:
            self.late = True  # the initial is slow to hand over (or never saw the marker): let
            out: Effects = [ToTenant(m) for m in self.held]   # the target's words through,
            self.held = []    # the initial's keep coming until its hand-over (order may break)
            return out
        return []

    def _handed(self) -> Effects:
        self.handed = True
        out: Effects = [ToTenant(m) for m in self.held]
        self.held = []
        return out + self._maybe_done()

    def _maybe_done(self) -> Effects:
        if not (self.handed and self.committed):
            return []
        mid = self.ids.mid or ""
        self.ids.end()
        self.state = DIRECT
        if self.target_gone:  # it ran everything, then died: the initial serves again
            if self.initial_gone:
                self.serving = "none"
                return [CloseTenant()]
            self.serving, log, self.log = "initial", self.log, []
            return [ToInitial(Resume(mid))] + [ToInitial(m) for m in log]
        self.serving, self.log = "target", []
        return [] if self.initial_gone else [ToInitial(Release(mid))]

    def _back(self, tell_target: bool) -> Effects:
        mid = self.ids.mid or ""
        self.ids.end()
        out: Effects = [ToTarget(Abort(mid))] if tell_target else []
        if self.initial_gone:  # nobody left to serve it: the tenant is told by a closed socket
            self.state, self.serving, self.log, self.held = DIRECT, "none", [], []
            return out + [CloseTenant()]
        out += [ToInitial(Resume(mid))] + [ToInitial(m) for m in self.log]
        self.state, self.serving, self.log, self.held = DIRECT, "initial", [], []
        return out
