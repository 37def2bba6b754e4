"""Where the suite's apps take their OpenFlow events from: the platform, or the LIME shim.

`[sdnmig] events = lime` in the instance's config file puts the LIME shim between the switches
and the apps: the apps' handlers are then registered for the shim's event classes, and the
mastership they ask about is the shim's (a logical switch is answered for once the shim holds
every instance of it). This module is the only thing an app changes to run on the shim.
"""
from __future__ import annotations

from typing import Any

from ryu_apps import config

LIME = config.events_source() == "lime"  # read once: apps import this before they run
if LIME:
    from lime_shim import lime_ofp_event as ofp_event
    from lime_shim.app import BRICK_NAME as ROLES_BRICK
    from lime_shim.lime_ofp_event import EventRoleChanged
else:
    from sdnmig.compat import ofp_event  # type: ignore[no-redef]
    from ryu_apps.roles.app import BRICK_NAME as ROLES_BRICK  # type: ignore[no-redef]
    from ryu_apps.roles.events import EventRoleChanged  # type: ignore[no-redef]

__all__ = ["ofp_event", "ROLES_BRICK", "EventRoleChanged", "idle"]


def idle(app: Any) -> bool:
    """Is nothing more queued for the app? (Group commit flushes when idle.) The shim calls the
    apps' handlers from its own event loop, so under it the shim's queue is the one to ask."""
    if not app.events.empty():
        return False
    if not LIME:
        return True
    shim = _shim[0]
    if shim is None:
        from sdnmig import compat
        shim = _shim[0] = compat.app_manager.lookup_service_brick(ROLES_BRICK)
    return shim is None or shim.events.empty()


_shim: list = [None]  # the shim's brick, once found
