"""OpenFlow events as the LIME shim delivers them: the platform's class names, the shim's classes.

An app takes its events from here instead of `ofp_event` (`[sdnmig] events = lime` does it for
the suite's apps, see `ryu_apps/source.py`). The platform routes an event class to the app that
lists it in `_EVENTS`, so these reach apps from the shim and never from the switches directly:
`ev.msg.datapath` is the shim's logical datapath, `ev.msg` is in logical ports. Handling any of
them makes the manager load the shim (`register_service`).
"""
from __future__ import annotations

import inspect
import time
from typing import Any, Dict, List, Type

from ryu_apps.roles import events as roles_events
from sdnmig import compat

compat.handler.register_service("lime_shim.app")


class EventOFPMsgBase(compat.EventBase):
    def __init__(self, msg: Any) -> None:
        super().__init__()
        self.timestamp = time.time()
        self.msg = msg


_BY_MSG: Dict[str, Type[EventOFPMsgBase]] = {}
for _ofp, _parser in compat.OFPROTOS.values():
    for _name, _cls in inspect.getmembers(_parser, inspect.isclass):
        if hasattr(_cls, "cls_msg_type") and "Event" + _name not in _BY_MSG:
            _BY_MSG["Event" + _name] = type("Event" + _name, (EventOFPMsgBase,),
                                            {"__module__": __name__})
globals().update(_BY_MSG)


class EventOFPStateChange(compat.EventBase):
    """The logical switch appeared (MAIN) or went away (DEAD: any of its instances failed)."""

    def __init__(self, dp: Any) -> None:
        super().__init__()
        self.datapath = dp


class EventRoleChanged(roles_events.EventRoleChanged):
    """The shim answers for the logical switch (MASTER), for apps that wait for mastership. The
    role manager's event, as a class of its own: the platform dispatches by exact class."""


_BY_CLS: Dict[type, Type[EventOFPMsgBase]] = {}  # a parser's class -> its event class


def event_for(msg: Any) -> EventOFPMsgBase:
    cls = type(msg)
    ev = _BY_CLS.get(cls)
    if ev is None:
        ev = _BY_CLS[cls] = _BY_MSG["Event" + cls.__name__]
    return ev(msg)


PACKET_IN = _BY_MSG["EventOFPPacketIn"]


ALL: List[type] = list(_BY_MSG.values()) + [EventOFPStateChange, EventRoleChanged]
