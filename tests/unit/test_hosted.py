"""Hosting a platform app on the LIME shim: its handlers are routed the shim's events, its code is
the installed app's, and under `events = platform` nothing changes. Runs under os-ken and Ryu."""
from __future__ import annotations

import importlib
from typing import Any, List

import pytest

from lime_shim import lime_ofp_event as lev
from lime_shim.app import LogicalDatapath
from ryu_apps.hosted import host, retarget
from ryu_apps.roles.events import EventRelease
from sdnmig import compat

ofp_event = compat.ofp_event
MAIN, DEAD, CONFIG = compat.MAIN_DISPATCHER, compat.DEAD_DISPATCHER, compat.CONFIG_DISPATCHER
MODULE = __name__  # the module that loads the hosted app


class Sample(compat.RyuApp):
    """A platform app written against the platform's events."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: List[Any] = []

    @compat.set_ev_cls(ofp_event.EventOFPPacketIn, MAIN)
    def packet_in(self, ev: Any) -> None:
        self.seen.append(ev)

    @compat.set_ev_cls(ofp_event.EventOFPStateChange, [MAIN, DEAD])
    def state(self, ev: Any) -> None:
        self.seen.append(ev)

    @compat.set_ev_cls(EventRelease)
    def release(self, ev: Any) -> None:
        self.seen.append(ev)

    def helper(self) -> str:
        return "kept"


def _callers(cls: type, name: str) -> dict:
    return {ev: (c.dispatchers, c.ev_source) for ev, c in getattr(cls, name).callers.items()}


def test_handlers_name_the_shims_events_of_the_same_name():
    hosted = retarget(Sample, MODULE, lev)
    assert _callers(hosted, "packet_in") == {lev.EventOFPPacketIn: ([MAIN], lev.__name__)}
    assert _callers(hosted, "state") == {lev.EventOFPStateChange: ([MAIN, DEAD], lev.__name__)}
    assert _callers(hosted, "release") == _callers(Sample, "release"), "not an OpenFlow event"


def test_the_app_itself_is_left_as_installed():
    before = {n: _callers(Sample, n) for n in ("packet_in", "state", "release")}
    hosted = retarget(Sample, MODULE, lev)
    assert {n: _callers(Sample, n) for n in before} == before
    assert issubclass(hosted, Sample) and hosted.__name__ == "Sample"
    assert hosted.__module__ == MODULE, "the manager loads the class its module defines"
    assert hosted.helper is Sample.helper


def test_the_manager_loads_the_shim_and_not_the_platforms_handler():
    hosted = retarget(Sample, MODULE, lev)
    services = compat.handler.get_dependent_services(hosted)
    assert "lime_shim.app" in services
    assert not any(s.endswith("ofp_handler") for s in services), services


def test_only_the_shims_events_reach_the_handlers():
    app = retarget(Sample, MODULE, lev)()
    compat.handler.register_instance(app)
    shim_ev = lev.EventOFPPacketIn(msg=None)
    assert [h.__name__ for h in app.get_handlers(shim_ev, MAIN)] == ["packet_in"]
    assert list(app.get_handlers(ofp_event.EventOFPPacketIn(msg=None), MAIN)) == []
    next(iter(app.get_handlers(shim_ev, MAIN)))(shim_ev)
    assert app.seen == [shim_ev], "the app's own handler ran"


def test_a_handler_failure_is_loud(caplog):
    class Failing(Sample):
        @compat.set_ev_cls(ofp_event.EventOFPPacketIn, MAIN)
        def packet_in(self, ev: Any) -> None:
            raise RuntimeError("boom")

    app = retarget(Failing, MODULE, lev)()
    with pytest.raises(RuntimeError):
        app.packet_in(lev.EventOFPPacketIn(msg=None))
    assert "SDNMIG-HANDLER-EXCEPTION" in caplog.text


def test_an_event_the_shim_does_not_deliver_is_refused():
    class Ports(Sample):
        @compat.set_ev_cls(ofp_event.EventOFPPortStateChange, MAIN)
        def ports(self, ev: Any) -> None:
            pass

    with pytest.raises(LookupError, match="Ports.ports handles EventOFPPortStateChange"):
        retarget(Ports, MODULE, lev)


def test_platform_events_change_nothing():
    hosted = retarget(Sample, MODULE, None)
    assert hosted.__module__ == MODULE and issubclass(hosted, Sample)
    assert all(getattr(hosted, n) is getattr(Sample, n) for n in ("packet_in", "state", "release"))


def _installed_simple_switch() -> Any:
    try:
        return importlib.import_module(f"{compat.PLATFORM}.app.simple_switch_13").SimpleSwitch13
    except ImportError:
        pytest.skip(f"{compat.PLATFORM} ships no simple_switch_13 (Ryu does)")


def test_without_the_platform_app_the_manager_stops_with_one_line():
    if importlib.util.find_spec(f"{compat.PLATFORM}.app.simple_switch_13"):
        pytest.skip(f"{compat.PLATFORM} ships simple_switch_13")
    with pytest.raises(SystemExit, match="simple_switch_13 is not installed"):
        host("simple_switch_13", MODULE, source="lime")


def test_under_platform_events_simple_switch_13_is_the_installed_app():
    installed = _installed_simple_switch()
    hosted = host("simple_switch_13", MODULE, source="platform")
    assert hosted.__bases__ == (installed,) and hosted.__module__ == MODULE
    assert set(hosted.__dict__) <= {"__module__", "__doc__"}, "nothing of it overridden"


class _Shim:
    """What a logical datapath sends to: records the messages."""

    def __init__(self) -> None:
        self.sent: List[Any] = []

    def from_app(self, ldp: Any, msg: Any) -> bool:
        self.sent.append(msg)
        return True


def _logical_dp() -> Any:
    ofp, parser = compat.OFPROTOS[compat.ofproto_v1_3.OFP_VERSION]
    like = type("Like", (), {"ofproto": ofp, "ofproto_parser": parser})()
    return LogicalDatapath(_Shim(), 3, like)


def _frame(src: str, dst: str) -> bytes:
    return bytes.fromhex(dst + src) + b"\x08\x00" + bytes(46)


def test_simple_switch_13_runs_on_a_logical_datapath():
    """The installed app, hosted: it only needs what LogicalDatapath has, and as the shim reports
    whole packets (no buffer) it sends the packet itself."""
    installed = _installed_simple_switch()
    app = host("simple_switch_13", MODULE, source="lime")()
    assert isinstance(app, installed)
    compat.handler.register_instance(app)
    ldp = _logical_dp()
    ofp, parser = ldp.ofproto, ldp.ofproto_parser
    features = parser.OFPSwitchFeatures(ldp, datapath_id=3, n_buffers=0, n_tables=254)
    (on_features,) = app.get_handlers(lev.EventOFPSwitchFeatures(features), CONFIG)
    on_features(lev.EventOFPSwitchFeatures(features))
    (miss,) = ldp.shim.sent
    assert (miss.priority, miss.match.to_jsondict(), miss.idle_timeout) == (
        0, parser.OFPMatch().to_jsondict(), 0)

    def packet_in(port: int, data: bytes) -> Any:
        pin = parser.OFPPacketIn(ldp, buffer_id=ofp.OFP_NO_BUFFER, total_len=len(data),
                                 reason=ofp.OFPR_NO_MATCH, table_id=0, cookie=0,
                                 match=parser.OFPMatch(in_port=port), data=data)
        pin.msg_len = len(data) + 42  # as parsed from the wire
        return lev.event_for(pin)

    a, b = "0000000000a1", "0000000000a2"
    ev = packet_in(1, _frame(a, b))
    (h,) = app.get_handlers(ev, MAIN)
    h(ev)
    (flood,) = ldp.shim.sent[1:]
    assert flood.buffer_id == ofp.OFP_NO_BUFFER and flood.data == _frame(a, b)
    assert [x.port for x in flood.actions] == [ofp.OFPP_FLOOD]
    h(packet_in(2, _frame(b, a)))
    rule, out = ldp.shim.sent[2:]
    assert (rule.priority, rule.match["in_port"], rule.match["eth_dst"]) == (
        1, 2, "00:00:00:00:00:a1")
    assert [x.port for x in out.actions] == [1] and out.data == _frame(b, a)
