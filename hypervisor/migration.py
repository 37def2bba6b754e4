"""Control-path migration between hypervisor instances (the distributed-hypervisor paper, sec. IV),
as three pure state machines: the target instance, the initial instance, and the proxy's route
for one tenant connection. No I/O: events come in with `now`, effects go out, in order.

The paper's protocol: the target connects to the switch's passive port (it must ask for
asynchronous messages, PLATFORM.md) and discards what the switch sends; it asks the proxy to
route the tenant's controller messages to it, buffers them, adds and deletes a dummy flow with a
reserved cookie; the FLOW_REMOVED reaching both instances is the marker: the initial gives the
switch up, the target flushes its buffer in order and takes over.

What this adds so that no tenant message is lost, duplicated or reordered:
- Drain before the marker. Tenant messages the initial forwarded travel on another connection
  than the target's; the switch may run them after the target's flush. So the proxy, when it
  reroutes, puts DRAIN on the initial's connection behind the last message it forwarded there;
  the initial sends a barrier after it and answers DRAINED when the barrier reply comes (every
  earlier reply was relayed up before it). Only then does the proxy tell the target REROUTED, and
  only then does the target add and delete the dummy flow.
- One upward stream. Up to the marker the initial relays the switch's messages, from it on the
  target. The proxy holds what the target relays until the initial's HANDED_OVER (sent when it
  saw the marker, behind everything it relayed before), so the tenant sees one ordered stream.
- A replay log. The proxy keeps what it routed to the target until the target's COMMITTED (its
  buffer flushed and a barrier answered). If the target fails or gives up first, the proxy
  RESUMEs the initial and sends it the log: the initial still holds the switch.
- The initial failing: the proxy takes its loss as DRAINED and HANDED_OVER, so the target
  completes.

One set of machines per (switch, tenant connection): the adapter hands each tenant's machines
the switch messages its slice owns, and the marker and its barrier replies to each machine of
that switch.

Left open (documented, not hidden): a target that fails after the marker and before COMMITTED
may have flushed part of its buffer, which the replay then sends again; and switch messages
between the marker and the initial's RESUME reach no tenant.

Target (one per migration):

| state      | event                    | effects                                       | next       |
|------------|--------------------------|-----------------------------------------------|------------|
| IDLE       | begin                    | ConnectSwitch                                 | CONNECTING |
| CONNECTING | switch_ready             | ToProxy(TakeOver)                             | ASKING     |
| ASKING     | rerouted                 | ToSwitch(MARK_ADD), ToSwitch(MARK_DELETE)     | MARKING    |
| ASKING,    | from_tenant(m)           | (buffered)                                    | same       |
|  MARKING   |                          |                                               |            |
| MARKING    | marker                   | ToSwitch(each buffered m), ToSwitch(Barrier)  | COMMITTING |
| COMMITTING | barrier_reply(COMMIT)    | ToProxy(Committed)                            | ACTIVE     |
| COMMITTING,| from_tenant(m)           | ToSwitch(m)                                   | same       |
|  ACTIVE    | from_switch(m)           | ToProxy(Upstream(m))                          | same       |
| before     | from_switch(m)           | (discarded: not ours yet)                     | same       |
|  COMMITTING|                          |                                               |            |
| before     | switch lost, proxy lost, | ToProxy(Abort) (unless the proxy is the one   | FAILED     |
|  ACTIVE    |  deadline passed         |  lost), CloseSwitch                           |            |
| before     | abort (from the proxy)   | CloseSwitch                                   | FAILED     |
|  ACTIVE    |                          |                                               |            |
| FAILED     | anything                 | - (the proxy goes back on its Abort)          | FAILED     |

Initial (per switch; one migration at a time):

| state      | event                    | effects                                       | next        |
|------------|--------------------------|-----------------------------------------------|-------------|
| SERVING    | drain                    | ToSwitch(Barrier(DRAIN))                      | DRAINING    |
| DRAINING   | barrier_reply(DRAIN)     | ToProxy(Drained)                              | DRAINED     |
| DRAINED    | marker                   | ToProxy(HandedOver)                           | HANDED_OVER |
| HANDED_OVER| release                  | CloseSwitch                                   | RELEASED    |
| DRAINING,  | resume                   | -                                             | SERVING     |
|  DRAINED,  |                          |                                               |             |
|  HANDED_OV.|                          |                                               |             |
| not HANDED_| from_tenant(m)           | ToSwitch(m)                                   | same        |
|  OVER/REL. | from_switch(m)           | ToProxy(Upstream(m))                          | same        |
| HANDED_OV. | from_switch(m)           | (discarded: the target's now)                 | same        |

Proxy route (one tenant connection):

| state     | event                        | effects                                        | next      |
|-----------|------------------------------|------------------------------------------------|-----------|
| DIRECT    | take_over (from the target)  | ToInitial(Drain)                               | SWITCHING |
| DIRECT    | from_tenant(m)               | To<serving instance>(m)                        | DIRECT    |
| SWITCHING,| from_tenant(m)               | ToTarget(m), kept in the log                   | same      |
|  REROUTED |                              |                                                |           |
| SWITCHING | drained, or initial lost     | ToTarget(Rerouted)                             | REROUTED  |
| REROUTED  | upstream from the target     | (held)                                         | same      |
| any       | upstream from the initial    | ToTenant(m)                                    | same      |
| REROUTED  | handed_over, or initial lost | ToTenant(each held m); then as below           | REROUTED  |
| REROUTED  | handed over and committed    | ToInitial(Release) (unless lost)               | DIRECT    |
|           |                              |   (serving: the target; log dropped)           |           |
| SWITCHING,| target lost, abort, or the   | ToInitial(Resume), ToInitial(each logged m),   | DIRECT    |
|  REROUTED |  deadline passed (uncommitted)| [deadline: ToTarget(Abort)]; the initial lost  |           |
|           |                              |  too: CloseTenant (serving: none)              |           |
| DIRECT    | from_tenant(m), initial lost | (kept in the log)                              | DIRECT    |
| DIRECT    | take_over, the initial lost  | ToTarget(Rerouted), ToTarget(each logged m)    | REROUTED  |
|           |                              |   (nothing to drain)                           |           |

Everything else is a ProtocolError (the peer broke the protocol) or ignored where the table
says so. Messages carry the migration id; one for another migration is a ProtocolError.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

DEADLINE_S = 5.0

# Target states
IDLE, CONNECTING, ASKING, MARKING, COMMITTING, ACTIVE, FAILED = (
    "idle", "connecting", "asking", "marking", "committing", "active", "failed")
# Initial states
SERVING, DRAINING, DRAINED, HANDED_OVER, RELEASED = (
    "serving", "draining", "drained", "handed_over", "released")
# Route states
DIRECT, SWITCHING, REROUTED = "direct", "switching", "rerouted"

MARK_ADD, MARK_DELETE = "mark_add", "mark_delete"   # the dummy flow (reserved cookie)
COMMIT, DRAIN = "commit", "drain"                   # barrier tokens


class ProtocolError(Exception):
    """A peer sent what the protocol does not allow in this state."""


# -- messages between proxy and instances (in band, on their OpenFlow connection) ---------------
@dataclass(frozen=True)
class Control:
    mid: str


class TakeOver(Control): pass            # noqa: E701  target -> proxy
class Drain(Control): pass               # noqa: E701  proxy -> initial
class Drained(Control): pass             # noqa: E701  initial -> proxy
class Rerouted(Control): pass            # noqa: E701  proxy -> target
class HandedOver(Control): pass          # noqa: E701  initial -> proxy
class Committed(Control): pass           # noqa: E701  target -> proxy
class Release(Control): pass             # noqa: E701  proxy -> initial
class Resume(Control): pass              # noqa: E701  proxy -> initial
class Abort(Control): pass               # noqa: E701  either way


@dataclass(frozen=True)
class Upstream:
    """A switch message for the tenant, relayed by an instance to the proxy."""

    msg: Any


@dataclass(frozen=True)
class Barrier:
    token: str


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
class CloseSwitch:
    pass


@dataclass(frozen=True)
class CloseTenant:
    """The proxy closes the tenant's connection: no instance is left to serve it."""


Effects = List[Any]


def _check(mid: str, msg: Control) -> None:
    if msg.mid != mid:
        raise ProtocolError(f"{type(msg).__name__} for migration {msg.mid!r}, in {mid!r}")


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
            return []  # it gave up meanwhile (its connection is being closed)
        self._in(CONNECTING, "switch_ready")
        self.state = ASKING
        return [ToProxy(TakeOver(self.mid))]

    def from_proxy(self, msg: Any, now: float) -> Effects:
        """A control message or a tenant's message from the proxy."""
        if self.state == FAILED:
            return []  # in flight when it gave up: the proxy hears its Abort and goes back
        if isinstance(msg, Rerouted):
            _check(self.mid, msg)
            self._in(ASKING, "rerouted")
            self.state = MARKING
            return [ToSwitch(MARK_ADD), ToSwitch(MARK_DELETE)]
        if isinstance(msg, Abort):
            _check(self.mid, msg)
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

    def marker(self, now: float) -> Effects:
        if self.state != MARKING:
            return []  # a marker of the past (or one seen before it was asked for): not ours
        self.state = COMMITTING
        out: Effects = [ToSwitch(m) for m in self.buffer]
        self.buffer = []
        return out + [ToSwitch(Barrier(COMMIT))]

    def barrier_reply(self, token: str, now: float) -> Effects:
        if token == COMMIT and self.state == COMMITTING:
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
        if self.state in (ACTIVE, FAILED):
            return []
        asked = self.state not in (IDLE, CONNECTING)
        self.state, self.buffer = FAILED, []
        return ([ToProxy(Abort(self.mid))] if tell_proxy and asked else []) + [CloseSwitch()]

    def _in(self, state: str, event: str) -> None:
        if self.state != state:
            raise ProtocolError(f"target: {event} in state {self.state}")


@dataclass
class Initial:
    state: str = SERVING
    mid: Optional[str] = None
    discarded: int = 0

    def from_proxy(self, msg: Any, now: float) -> Effects:
        if isinstance(msg, Drain):
            if self.state != SERVING:
                raise ProtocolError(f"initial: drain in state {self.state}")
            self.state, self.mid = DRAINING, msg.mid
            return [ToSwitch(Barrier(DRAIN))]
        if isinstance(msg, Resume):
            _check(self.mid or "", msg)
            if self.state in (DRAINING, DRAINED, HANDED_OVER):
                self.state, self.mid = SERVING, None
            return []
        if isinstance(msg, Release):
            _check(self.mid or "", msg)
            if self.state != HANDED_OVER:
                raise ProtocolError(f"initial: release in state {self.state}")
            self.state = RELEASED
            return [CloseSwitch()]
        if isinstance(msg, Control):
            raise ProtocolError(f"initial got {type(msg).__name__}")
        if self.state in (HANDED_OVER, RELEASED):
            raise ProtocolError(f"a tenant's message reached the initial in state {self.state}")
        return [ToSwitch(msg)]

    def barrier_reply(self, token: str, now: float) -> Effects:
        if token == DRAIN and self.state == DRAINING:
            self.state = DRAINED
            return [ToProxy(Drained(self.mid or ""))]
        return []

    def marker(self, now: float) -> Effects:
        if self.state != DRAINED:
            return []  # no migration of ours has asked for it
        self.state = HANDED_OVER
        return [ToProxy(HandedOver(self.mid or ""))]

    def from_switch(self, msg: Any, now: float) -> Effects:
        if self.state in (HANDED_OVER, RELEASED):
            self.discarded += 1
            return []
        return [ToProxy(Upstream(msg))]


@dataclass
class Route:
    """The proxy's side of one tenant connection. `serving`: which instance is its hypervisor."""

    deadline_s: float = DEADLINE_S
    state: str = DIRECT
    serving: str = "initial"
    mid: Optional[str] = None
    log: List[Any] = field(default_factory=list)
    held: List[Any] = field(default_factory=list)
    handed: bool = False
    committed: bool = False
    initial_gone: bool = False
    deadline: float = 0.0

    def from_tenant(self, msg: Any, now: float) -> Effects:
        if self.state == DIRECT:
            if self.serving == "none":
                return []
            if self.serving == "initial" and self.initial_gone:
                self.log.append(msg)  # for the instance that will take the tenant over
                return []
            return [ToInitial(msg) if self.serving == "initial" else ToTarget(msg)]
        self.log.append(msg)
        return [ToTarget(msg)]

    def from_target(self, msg: Any, now: float) -> Effects:
        if isinstance(msg, TakeOver):
            if self.state != DIRECT or self.serving != "initial":
                raise ProtocolError(f"proxy: take-over in state {self.state}")
            self.state, self.mid, self.deadline = SWITCHING, msg.mid, now + self.deadline_s
            self.held, self.handed, self.committed = [], False, False
            if self.initial_gone:  # a take-over of a dead instance's tenant: nothing to drain,
                self.state, self.handed = REROUTED, True   # what the tenant sent meanwhile first
                return [ToTarget(Rerouted(msg.mid))] + [ToTarget(m) for m in self.log]
            self.log = []
            return [ToInitial(Drain(msg.mid))]
        if isinstance(msg, Committed):
            _check(self.mid or "", msg)
            if self.state != REROUTED:
                raise ProtocolError(f"proxy: committed in state {self.state}")
            self.committed = True
            return self._maybe_done()
        if isinstance(msg, Abort):
            _check(self.mid or "", msg)
            return self._back(tell_target=False)
        if isinstance(msg, Control):
            raise ProtocolError(f"proxy got {type(msg).__name__} from the target")
        if isinstance(msg, Upstream):
            if self.state == REROUTED and not self.handed:
                self.held.append(msg.msg)
                return []
            if self.state == DIRECT and self.serving != "target":
                return []  # an aborted target's late word
            return [ToTenant(msg.msg)]
        raise ProtocolError(f"proxy: {msg!r} from the target")

    def from_initial(self, msg: Any, now: float) -> Effects:
        if isinstance(msg, Drained):
            _check(self.mid or "", msg)
            if self.state != SWITCHING:
                return []  # after an abort
            self.state = REROUTED
            return [ToTarget(Rerouted(msg.mid))]
        if isinstance(msg, HandedOver):
            _check(self.mid or "", msg)
            if self.state != REROUTED:
                return []
            return self._handed()
        if isinstance(msg, Upstream):
            if self.state == DIRECT and self.serving == "target":
                return []  # a released initial's late word
            return [ToTenant(msg.msg)]
        raise ProtocolError(f"proxy: {msg!r} from the initial")

    def lost(self, peer: str, now: float) -> Effects:
        """The connection to the "initial" or "target" instance is gone."""
        if peer == "initial" and self.serving == "initial":
            self.initial_gone = True
        if self.state == DIRECT:
            return []
        if peer == "target":
            return self._back(tell_target=False)
        self.initial_gone = True
        if self.state == SWITCHING:
            self.state = REROUTED
            return [ToTarget(Rerouted(self.mid or ""))] + self._handed()
        return self._handed() if not self.handed else []

    def tick(self, now: float) -> Effects:
        if self.state != DIRECT and not self.committed and now >= self.deadline:
            return self._back(tell_target=True)
        return []

    def _handed(self) -> Effects:
        self.handed = True
        out: Effects = [ToTenant(m) for m in self.held]
        self.held = []
        return out + self._maybe_done()

    def _maybe_done(self) -> Effects:
        if not (self.handed and self.committed):
            return []
        out: Effects = [] if self.initial_gone else [ToInitial(Release(self.mid or ""))]
        self.state, self.serving, self.log = DIRECT, "target", []
        return out

    def _back(self, tell_target: bool) -> Effects:
        if self.state == DIRECT:
            return []
        mid = self.mid or ""
        out: Effects = ([ToTarget(Abort(mid))] if tell_target else [])
        if self.initial_gone:  # nobody left to serve it: the tenant is told by a closed socket
            self.state, self.serving, self.log, self.held = DIRECT, "none", [], []
            return out + [CloseTenant()]
        out += [ToInitial(Resume(mid))] + [ToInitial(m) for m in self.log]
        self.state, self.serving, self.log, self.held = DIRECT, "initial", [], []
        return out
