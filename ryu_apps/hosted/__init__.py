"""Platform apps run unchanged on the LIME shim: only where their OpenFlow events come from changes.

A platform app names its events by class (`@set_ev_cls(ofp_event.EventOFPPacketIn, ...)`, which
stores `callers` on the handler: event class -> dispatchers and the module that emits it), and the
manager routes each class to the apps whose handlers name it. `retarget` makes, at load time, a
subclass of an installed app whose handlers name the class of the same name in
`lime_shim.lime_ofp_event` instead. The app's own code then runs as written, on the shim's logical
datapaths; naming the shim's events makes the manager load the shim. The installed module itself is
left as it is, and each module of this package is one hosted app the manager can load.
"""
from __future__ import annotations

import importlib
import inspect
from types import ModuleType
from typing import Any, Callable, Dict, Optional

from ryu_apps import config
from ryu_apps.loud import loud
from sdnmig import compat


def _handler_for(fn: Callable[..., Any], events: ModuleType, owner: str) -> Callable[..., Any]:
    """`fn`, loud, with every platform OpenFlow event it handles taken from `events` instead."""
    wrapper = loud(fn)
    wrapper.__dict__.pop("callers", None)  # wraps() shared the original's table: build our own
    callers: Dict[type, Any] = fn.callers  # type: ignore[attr-defined]
    for ev_cls, caller in callers.items():
        if ev_cls.__module__ == compat.ofp_event.__name__:
            target = getattr(events, ev_cls.__name__, None)
            if target is None:
                raise LookupError(f"{owner}.{fn.__name__} handles {ev_cls.__name__}, which "
                                  f"{events.__name__} does not deliver")
            ev_cls = target
        if caller.ev_source is None:  # set_ev_handler: no emitter to observe
            compat.handler.set_ev_handler(ev_cls, caller.dispatchers)(wrapper)
        else:
            compat.set_ev_cls(ev_cls, caller.dispatchers)(wrapper)
    return wrapper


def retarget(app: type, module: str, events: Optional[ModuleType]) -> type:
    """A subclass of `app` named and placed as the manager looks for it (`module` is the loading
    module's name). With `events`, each handler takes its platform OpenFlow events from that
    module's classes of the same name; without, nothing of `app` is changed."""
    namespace: Dict[str, Any] = {"__module__": module, "__doc__": app.__doc__}
    if events is not None:
        for name, fn in inspect.getmembers(app, inspect.isfunction):
            if getattr(fn, "callers", None):
                namespace[name] = _handler_for(fn, events, app.__name__)
    return type(app.__name__, (app,), namespace)


def host(platform_app: str, module: str, source: Optional[str] = None) -> type:
    """The platform's own `<platform>.app.<platform_app>`, for this instance's `[sdnmig] events`
    (or `source`): as installed under 'platform', retargeted onto the shim under 'lime'. Stops the
    manager with one line when the platform has no such app (os-ken 3 ships no sample apps)."""
    path = f"{compat.PLATFORM}.app.{platform_app}"
    try:
        mod = importlib.import_module(path)
    except ImportError as e:
        raise SystemExit(f"sdnmig: {path} is not installed ({e}); it comes with Ryu "
                         f"(SDNMIG_PLATFORM=ryu)") from None
    apps = [c for _, c in inspect.getmembers(mod, inspect.isclass)
            if issubclass(c, compat.RyuApp) and c.__module__ == mod.__name__]
    if len(apps) != 1:
        raise SystemExit(f"sdnmig: {path} holds {len(apps)} apps, not one")
    events = None
    if (source or config.events_source()) == "lime":
        from lime_shim import lime_ofp_event as events
    try:
        return retarget(apps[0], module, events)
    except LookupError as e:
        raise SystemExit(f"sdnmig: {path} cannot run on the LIME shim: {e}") from None
