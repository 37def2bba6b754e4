"""Events the role manager publishes. Handling one makes the platform load the role manager."""
from __future__ import annotations

from typing import Any, Tuple

from sdnmig import compat

compat.handler.register_service("ryu_apps.roles.app")


class EventRoleChanged(compat.EventBase):
    """This instance's confirmed role on a switch changed.

    `released` holds the packet-ins that arrived while the role was being negotiated and are now
    this instance's to answer (only when the new role is MASTER), in arrival order.
    """

    def __init__(self, datapath: Any, role: int, generation_id: int,
                 released: Tuple[Any, ...] = ()) -> None:
        super().__init__()
        self.datapath = datapath
        self.role = role
        self.generation_id = generation_id
        self.released = released
