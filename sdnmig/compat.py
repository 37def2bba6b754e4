"""The one module that imports the controller platform: os-ken (maintained) or Ryu 4.34.

Both expose the same API under different package names. Everything else in the suite imports
the platform's parts from here, so switching platform is one environment variable
(`SDNMIG_PLATFORM=ryu` or `os_ken`) and no other file mentions either package.
Without the variable, os-ken is preferred (Ryu 4.34 runs only on Python 3.9).
"""
from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

_CHOICES = ("os_ken", "ryu")


def _pick() -> str:
    wanted = os.environ.get("SDNMIG_PLATFORM", "").strip().replace("-", "_")
    if wanted:
        if wanted not in _CHOICES:
            raise ImportError(f"SDNMIG_PLATFORM={wanted!r}: use one of {', '.join(_CHOICES)}")
        return wanted
    for name in _CHOICES:
        try:
            importlib.import_module(name)
            return name
        except ImportError:
            continue
    raise ImportError("neither os_ken nor ryu is installed: run 'sudo make install'")


# eventlet >= 0.36 warns on import that it is deprecated; the platform needs it regardless.
warnings.filterwarnings("ignore", message="\\s*Eventlet is deprecated")

PLATFORM: str = _pick()
#: The command that loads apps on this platform.
MANAGER: str = "osken-manager" if PLATFORM == "os_ken" else "ryu-manager"


def _mod(path: str) -> ModuleType:
    return importlib.import_module(f"{PLATFORM}.{path}")


app_manager = _mod("base.app_manager")
handler = _mod("controller.handler")
ofp_event = _mod("controller.ofp_event")
event = _mod("controller.event")
controller = _mod("controller.controller")
hub = _mod("lib.hub")
cfg = _mod("cfg")
ofproto_v1_3 = _mod("ofproto.ofproto_v1_3")
ofproto_v1_3_parser = _mod("ofproto.ofproto_v1_3_parser")
ofproto_v1_5 = _mod("ofproto.ofproto_v1_5")
ofproto_v1_5_parser = _mod("ofproto.ofproto_v1_5_parser")
ofproto_protocol = _mod("ofproto.ofproto_protocol")
ofproto_parser = _mod("ofproto.ofproto_parser")
ofproto_common = _mod("ofproto.ofproto_common")

#: the app base class (os-ken renamed RyuApp to OSKenApp)
RyuApp = getattr(app_manager, "OSKenApp", None) or app_manager.RyuApp
set_ev_cls = handler.set_ev_cls
HANDSHAKE_DISPATCHER = handler.HANDSHAKE_DISPATCHER
CONFIG_DISPATCHER = handler.CONFIG_DISPATCHER
MAIN_DISPATCHER = handler.MAIN_DISPATCHER
DEAD_DISPATCHER = handler.DEAD_DISPATCHER
EventBase = event.EventBase

#: wire version -> (ofproto module, parser module)
OFPROTOS = {
    ofproto_v1_3.OFP_VERSION: (ofproto_v1_3, ofproto_v1_3_parser),
    ofproto_v1_5.OFP_VERSION: (ofproto_v1_5, ofproto_v1_5_parser),
}


def protocol(version: int):
    """A datapath-less protocol descriptor, so pure code can build and serialise messages."""
    return ofproto_protocol.ProtocolDesc(version)


def parse(version: int, data: bytes):
    """Decode one OpenFlow message from wire bytes with the platform's parser."""
    ver, msg_type, msg_len, xid = ofproto_parser.header(data)
    return ofproto_parser.msg(protocol(ver), ver, msg_type, msg_len, xid, data[:msg_len])


def parse_for(datapath, data: bytes):
    """Decode a message received on another connection as if `datapath` had received it."""
    ver, msg_type, msg_len, xid = ofproto_parser.header(data)
    return ofproto_parser.msg(datapath, ver, msg_type, msg_len, xid, data[:msg_len])


def register_sync_handler(ev_cls, fn) -> None:
    """Run fn(ev) inside the connection's receive loop, before the next message is read.

    The platform queues each message to every app separately, so apps see one switch's stream in
    different interleavings; a handler on the OpenFlow brick itself sees it in wire order, which a
    migration needs to split the stream at a marker. fn must not block and must not raise.
    """
    def sync(ev):  # a plain function: the platform reads `callers` from it
        fn(ev)

    handler.set_ev_handler(ev_cls, [MAIN_DISPATCHER])(sync)
    app_manager.lookup_service_brick("ofp_event").register_handler(ev_cls, sync)
