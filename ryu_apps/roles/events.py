"""Events about who answers a switch's packet-ins. Handling one makes the platform load the role manager.

The role manager emits `EventRoleChanged` and `EventRoleRefused`. A migration app emits
`EventRelease` (answer these buffered packet-ins now, in order) and `EventQuiesce` (finish and
commit everything queued before this event, then call `done`): apps that answer packet-ins handle
both, so a switch's state can be moved at a precise point of its message stream. It also emits
`EventStateMoved` when it wrote or deleted a switch's state in this instance's Redis.
"""
from __future__ import annotations

from typing import Any, Callable, Tuple

from sdnmig import compat

compat.handler.register_service("ryu_apps.roles.app")

#: Attribute set on a packet-in a migration buffered at arrival; it is answered later through
#: `EventRelease` (or by another controller), never from the platform's own event.
HELD_ATTR = "_sdnmig_held"


def mark_held(msg: Any) -> None:
    setattr(msg, HELD_ATTR, True)


def is_held(msg: Any) -> bool:
    return bool(getattr(msg, HELD_ATTR, False))


class EventRoleChanged(compat.EventBase):
    """This instance's confirmed role on a switch changed (or was confirmed again).

    `released` holds the packet-ins that arrived while the role was being negotiated and are now
    this instance's to answer (only when the new role is MASTER), in arrival order.
    `by_status`: another controller changed our role (the switch sent ROLE_STATUS).
    """

    def __init__(self, datapath: Any, role: int, generation_id: int,
                 released: Tuple[Any, ...] = (), by_status: bool = False) -> None:
        super().__init__()
        self.datapath = datapath
        self.role = role
        self.generation_id = generation_id
        self.released = released
        self.by_status = by_status


class EventRoleRefused(compat.EventBase):
    """A fenced role request was refused as stale: someone holds a higher generation_id."""

    def __init__(self, datapath: Any, role: int, generation_id: int) -> None:
        super().__init__()
        self.datapath = datapath
        self.role = role
        self.generation_id = generation_id


class EventRelease(compat.EventBase):
    """Answer these packet-ins now, in order, if this instance is MASTER of the switch. A
    PORT_STATUS among them (a migration buffers those too) is applied at its place in the order."""

    def __init__(self, datapath: Any, msgs: Tuple[Any, ...]) -> None:
        super().__init__()
        self.datapath = datapath
        self.msgs = msgs


class EventQuiesce(compat.EventBase):
    """Commit and send everything handled so far for this switch, then call `done()`."""

    def __init__(self, dpid: int, done: Callable[[], None]) -> None:
        super().__init__()
        self.dpid = dpid
        self.done = done


class EventStateMoved(compat.EventBase):
    """A migration replaced (`present`) or deleted this switch's state in this instance's Redis.

    Sent while the instance is not the switch's MASTER, so nothing else writes those keys until
    it is: an app that keeps a switch's state in memory may read it now instead of when MASTER
    comes, which is on the migration's critical path (1.7 ms for 1000 learned hosts).
    """

    def __init__(self, dpid: int, present: bool) -> None:
        super().__init__()
        self.dpid = dpid
        self.present = present
