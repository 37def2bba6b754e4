"""`ryu_apps.pathflip`: the VNM paper's control app, which flips two hosts' path every period.

The core is asked about behaviour (which rules each switch holds, when the path flips, with time
given by the test); the adapter about what it sends: FLOW_MODs built for stand-in datapaths with
the platform's own OpenFlow 1.3 and 1.5 parsers, encoded and decoded again. Runs under os-ken and
Ryu.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator, List, Tuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ryu_apps import ofmsgs, source
from ryu_apps.config import PathflipConfig
from ryu_apps.pathflip import app as app_mod
from ryu_apps.pathflip.app import PATHFLIP_COOKIE, PRIORITY, PathFlipApp
from ryu_apps.pathflip.core import LOWER, UPPER, PathFlip, Rule
from ryu_apps.roles.core import Role
from ryu_apps.roles.events import EventRoleChanged
from sdnmig import compat

A, U, L, B = 0x11, 0x12, 0x13, 0x14
UP, DOWN, HOST = 1, 2, 4
P = 1.0
T0 = 100.0
CFG = PathflipConfig((A, U, L, B), UP, DOWN, HOST, P)
OF13 = compat.ofproto_v1_3.OFP_VERSION
OF15 = compat.ofproto_v1_5.OFP_VERSION
VERSIONS = [pytest.param(OF13, id="of13"), pytest.param(OF15, id="of15")]


def all_up(core: PathFlip, order: Tuple[int, ...] = (A, U, L, B)) -> PathFlip:
    for dpid in order:
        core.switch_up(dpid)
    return core


def armed(at: float = T0, cfg: PathflipConfig = CFG) -> PathFlip:
    """All four up and the schedule started at `at`: the first flip is due at at + period."""
    core = all_up(PathFlip(cfg), cfg.switches)
    assert core.tick(at) == []
    return core


def path_rules(out: int, cfg: PathflipConfig = CFG) -> List[Rule]:
    a, _, _, b = cfg.switches
    return [Rule(a, cfg.host, out), Rule(b, cfg.host, out)]


# -- rules per switch -----------------------------------------------------------------------------

def test_edge_switches_send_both_middles_to_the_host_and_the_host_up_the_current_path() -> None:
    core = PathFlip(CFG)
    assert core.path == UPPER
    for edge in (A, B):
        assert core.switch_up(edge) == [Rule(edge, UP, HOST), Rule(edge, DOWN, HOST),
                                        Rule(edge, HOST, UP)]


def test_middle_switches_join_ports_one_and_two() -> None:
    core = PathFlip(CFG)
    for middle in (U, L):
        assert core.switch_up(middle) == [Rule(middle, 1, 2), Rule(middle, 2, 1)]


def test_the_configured_switches_and_ports_are_the_ones_used() -> None:
    cfg = PathflipConfig((0x21, 0x22, 0x23, 0x24), 7, 9, 3, 0.5)
    core = PathFlip(cfg)
    assert core.switch_up(0x21) == [Rule(0x21, 7, 3), Rule(0x21, 9, 3), Rule(0x21, 3, 7)]
    assert core.switch_up(0x23) == [Rule(0x23, 1, 2), Rule(0x23, 2, 1)]
    assert core.switch_up(A) == [], "the default A is not one of these four"
    core = armed(at=10.0, cfg=cfg)
    assert core.tick(10.49) == []
    assert core.tick(10.5) == path_rules(9, cfg)


def test_a_switch_not_among_the_four_gets_nothing_and_does_not_count() -> None:
    core = all_up(PathFlip(CFG), (A, U, L))
    assert core.switch_up(0x99) == []
    assert not core.ready
    assert core.tick(T0) == [] and core.tick(T0 + 10 * P) == [] and core.due is None


# -- when the path flips --------------------------------------------------------------------------

@pytest.mark.parametrize("order", [(A, U, L, B), (B, L, U, A), (U, L, A, B)])
def test_nothing_flips_until_all_four_are_up_whatever_their_order(order: Tuple[int, ...]) -> None:
    core = PathFlip(CFG)
    for i, dpid in enumerate(order[:3]):
        core.switch_up(dpid)
        assert core.tick(T0 + i * 10 * P) == []
    assert core.due is None and core.flips == 0
    core.switch_up(order[3])
    assert core.ready


def test_the_first_flip_is_one_period_after_the_first_tick_with_all_four_up() -> None:
    core = armed()
    assert core.due == T0 + P
    assert core.tick(T0 + P - 0.001) == []
    assert core.tick(T0 + P) == path_rules(DOWN)
    assert (core.path, core.flips) == (LOWER, 1)


def test_flips_alternate_between_the_two_paths() -> None:
    core = armed()
    outs = [core.tick(T0 + k * P) for k in range(1, 5)]
    assert outs == [path_rules(DOWN), path_rules(UP), path_rules(DOWN), path_rules(UP)]
    assert (core.path, core.flips) == (UPPER, 4)


def test_a_loop_late_each_time_does_not_drift() -> None:
    core = armed()
    for k in range(1, 101):
        assert core.tick(T0 + k * P + 0.3) != []
        assert core.due == pytest.approx(T0 + (k + 1) * P)
    assert core.flips == 100


def test_a_loop_late_by_several_periods_flips_once_and_keeps_the_grid() -> None:
    core = armed()
    assert core.tick(T0 + 3.5 * P) == path_rules(DOWN)
    assert core.flips == 1 and core.due == T0 + 4 * P
    assert core.tick(T0 + 3.9 * P) == []
    assert core.tick(T0 + 4 * P) == path_rules(UP)


def test_a_tick_exactly_on_a_later_due_time_schedules_the_next_one_after_it() -> None:
    core = armed()
    assert core.tick(T0 + 3 * P) != []
    assert core.due == T0 + 4 * P
    assert core.tick(T0 + 3 * P) == [], "asked again at the same time: no second flip"


@given(st.lists(st.integers(0, 40 * 64), max_size=60))
def test_any_ticks_flip_once_per_period_slot_they_reach(times: List[int]) -> None:
    """Times in 1/64 s (exact in binary); a period of 1/4 s. A flip happens at the first tick of
    each slot [T0 + kP, T0 + (k+1)P), k >= 1, that any tick falls in, and never otherwise."""
    cfg = PathflipConfig((A, U, L, B), UP, DOWN, HOST, 0.25)
    core = armed(cfg=cfg)
    slots = set()
    for t in sorted(times):
        now = T0 + t / 64
        slot = int((now - T0) // 0.25)
        flipped = core.tick(now) != []
        assert flipped == (slot >= 1 and slot not in slots)
        if flipped:
            slots.add(slot)
        assert core.due == T0 + (max(slots | {0}) + 1) * 0.25
    assert core.flips == len(slots)
    assert core.path == (UPPER if len(slots) % 2 == 0 else LOWER)


# -- switches leaving and coming back -------------------------------------------------------------

def test_a_switch_going_away_pauses_flips_and_coming_back_restarts_the_schedule() -> None:
    core = armed()
    core.tick(T0 + P)
    core.switch_down(U)
    assert not core.ready and core.due is None
    assert core.tick(T0 + 5 * P) == []
    core.switch_up(U)
    assert core.tick(T0 + 5.2 * P) == [], "re-armed: one period from now"
    assert core.tick(T0 + 6.1 * P) == []
    assert core.tick(T0 + 6.2 * P) == path_rules(UP)
    assert core.flips == 2


def test_a_switch_down_and_up_between_two_ticks_still_restarts_the_schedule() -> None:
    core = armed()
    core.switch_down(A)
    core.switch_up(A)
    assert core.tick(T0 + P) == [], "re-armed at this tick"
    assert core.tick(T0 + 2 * P) == path_rules(DOWN)


def test_a_returning_edge_switch_gets_the_current_path() -> None:
    core = armed()
    core.tick(T0 + P)
    core.switch_down(B)
    assert core.switch_up(B)[-1] == Rule(B, HOST, DOWN)
    assert core.path == LOWER, "the path survives a switch going away"


def test_confirming_a_known_switch_again_resends_its_rules_and_keeps_the_schedule() -> None:
    core = armed()
    assert core.switch_up(A) == [Rule(A, UP, HOST), Rule(A, DOWN, HOST), Rule(A, HOST, UP)]
    assert core.due == T0 + P
    assert core.tick(T0 + P) == path_rules(DOWN)


def test_an_unknown_switch_going_away_changes_nothing() -> None:
    core = armed()
    core.switch_down(0x99)
    core.switch_down(U)
    core.switch_down(U)
    assert core.known == {A, L, B}
    core = armed()
    core.switch_down(0x99)
    assert core.due == T0 + P


# -- the adapter ----------------------------------------------------------------------------------

class FakeDatapath:
    """What the app uses of a datapath: id, the version's protocol modules, send_msg."""

    def __init__(self, dpid: int, version: int) -> None:
        self.id = dpid
        self.ofproto, self.ofproto_parser = compat.OFPROTOS[version]
        self.sent: List[Any] = []

    def send_msg(self, msg: Any) -> bool:
        self.sent.append(msg)
        return True


def decoded(dp: FakeDatapath) -> List[Tuple[int, int]]:
    """(in_port, out_port) of each FLOW_MOD sent, checking on the wire that each is an ADD of
    the app's one kind of rule: in_port only, our priority and cookie, no timeouts."""
    ofp = dp.ofproto
    out = []
    for msg in dp.sent:
        msg.serialize()
        back = compat.parse(ofp.OFP_VERSION, bytes(msg.buf))
        assert back is not None and back.msg_type == ofp.OFPT_FLOW_MOD
        assert (back.command, back.priority, back.cookie, back.table_id) == (
            ofp.OFPFC_ADD, PRIORITY, PATHFLIP_COOKIE, 0)
        assert (back.idle_timeout, back.hard_timeout, back.flags) == (0, 0, 0)
        assert back.buffer_id == ofp.OFP_NO_BUFFER
        (in_port,) = [v for k, v in back.match.items() if k == "in_port"]
        assert dict(back.match.items()) == {"in_port": in_port}
        (inst,) = back.instructions
        assert inst.type == ofp.OFPIT_APPLY_ACTIONS
        (action,) = inst.actions
        assert (action.type, action.max_len) == (ofp.OFPAT_OUTPUT, ofp.OFPCML_NO_BUFFER)
        out.append((in_port, action.port))
    dp.sent.clear()
    return out


def use_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **opts: Any) -> None:
    """A fresh oslo.config object reading an [sdnmig] section (the global CONF is never touched)."""
    path = tmp_path / "controller.conf"
    path.write_text("[DEFAULT]\n[sdnmig]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items()))
    conf = compat.cfg.ConfigOpts()
    conf(args=["--config-file", str(path)], project="sdnmig-test", default_config_files=[])
    monkeypatch.setattr(compat.cfg, "CONF", conf)


@pytest.fixture
def make_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    made: List[PathFlipApp] = []

    def make(**opts: Any) -> PathFlipApp:
        use_config(tmp_path, monkeypatch, **opts)
        made.append(PathFlipApp())
        return made[-1]

    yield make
    for app in made:
        for thread in app.threads:
            compat.hub.kill(thread)


def master(app: PathFlipApp, dp: FakeDatapath, role: int = Role.MASTER) -> None:
    app._role_changed(EventRoleChanged(dp, role, 1))


def four(version: int) -> Tuple[FakeDatapath, ...]:
    return tuple(FakeDatapath(d, version) for d in (A, U, L, B))


@pytest.mark.parametrize("version", VERSIONS)
def test_becoming_master_installs_each_switchs_rules(make_app: Any, version: int) -> None:
    app = make_app()
    a, u, lo, b = four(version)
    for dp in (a, u, lo, b):
        master(app, dp)
    assert decoded(a) == decoded(b) == [(UP, HOST), (DOWN, HOST), (HOST, UP)]
    assert decoded(u) == decoded(lo) == [(1, 2), (2, 1)]
    assert set(app.datapaths) == {A, U, L, B}


@pytest.mark.parametrize("version", VERSIONS)
def test_a_flip_replaces_the_host_rule_on_both_edges_only(make_app: Any, version: int,
                                                          caplog: Any) -> None:
    app = make_app()
    dps = a, u, lo, b = four(version)
    for dp in dps:
        master(app, dp)
        decoded(dp)
    app._tick(T0)
    assert all(dp.sent == [] for dp in dps), "armed, not yet due"
    with caplog.at_level(logging.INFO, logger="sdnmig.pathflip"):
        app._tick(T0 + 1.0)
    assert decoded(a) == decoded(b) == [(HOST, DOWN)]
    assert u.sent == lo.sent == []
    assert app.flips == 1 and "flip 1: path lower" in caplog.text
    app._tick(T0 + 2.0)
    assert decoded(a) == decoded(b) == [(HOST, UP)]
    assert app.flips == 2


def test_the_configured_switches_ports_and_period_are_used(make_app: Any) -> None:
    app = make_app(pathflip_switches="0x21,0x22,0x23,0x24", pathflip_ports="5,6,7",
                   pathflip_period_s=0.5)
    dps = [FakeDatapath(d, OF13) for d in (0x21, 0x22, 0x23, 0x24)]
    for dp in dps:
        master(app, dp)
    assert decoded(dps[0]) == decoded(dps[3]) == [(5, 7), (6, 7), (7, 5)]
    assert decoded(dps[1]) == decoded(dps[2]) == [(1, 2), (2, 1)]
    app._tick(T0)
    app._tick(T0 + 0.5)
    assert decoded(dps[0]) == decoded(dps[3]) == [(7, 6)]


def test_other_switches_are_left_alone(make_app: Any) -> None:
    app = make_app()
    other = FakeDatapath(0x99, OF13)
    master(app, other)
    assert other.sent == [] and app.datapaths == {}


@pytest.mark.parametrize("role", [Role.SLAVE, Role.EQUAL])
def test_losing_mastership_forgets_the_switch_and_pauses_flips(make_app: Any, role: int) -> None:
    app = make_app()
    a, u, lo, b = four(OF13)
    for dp in (a, u, lo, b):
        master(app, dp)
    app._tick(T0)
    master(app, u, role)
    assert U not in app.datapaths and not app.core.ready
    app._tick(T0 + 5.0)
    assert app.flips == 0


def test_only_the_connection_held_going_dead_forgets_the_switch(make_app: Any) -> None:
    app = make_app()
    old, new = FakeDatapath(A, OF13), FakeDatapath(A, OF13)
    master(app, old)
    master(app, new)  # reconnected: the old connection's DEAD may come after
    app._switch_gone(source.ofp_event.EventOFPStateChange(old))
    assert app.datapaths[A] is new
    app._switch_gone(source.ofp_event.EventOFPStateChange(new))
    assert A not in app.datapaths and A not in app.core.known


def test_a_bad_setting_stops_the_app_with_one_line(make_app: Any) -> None:
    with pytest.raises(SystemExit, match=r"^sdnmig: \[sdnmig\] pathflip_ports"):
        make_app(pathflip_ports="1,1,4")


def test_the_flip_loop_runs_in_a_greenthread_of_the_app(make_app: Any) -> None:
    app = make_app()
    assert len(app.threads) == 1


class Stop(BaseException):
    """Ends the flip loop in a test (the loop catches Exception only)."""


def test_a_failing_flip_is_logged_and_the_loop_goes_on(make_app: Any, monkeypatch: Any,
                                                       caplog: Any) -> None:
    app = make_app()
    ticks: List[float] = []

    def failing_tick(now: float) -> None:
        ticks.append(now)
        raise RuntimeError("switch gone mid-flip")

    def sleep(seconds: float) -> None:
        if len(ticks) == 3:
            raise Stop

    monkeypatch.setattr(app, "_tick", failing_tick)
    monkeypatch.setattr(compat.hub, "sleep", sleep)
    with pytest.raises(Stop):
        app._flip_loop()
    assert len(ticks) == 3
    assert caplog.text.count("in pathflip's flip") == 3 and "switch gone mid-flip" in caplog.text


def test_the_loop_sleeps_until_the_flip_is_due_but_never_long(make_app: Any,
                                                             monkeypatch: Any) -> None:
    app = make_app()
    slept: List[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:
            raise Stop
        app.core.due = app_mod.time.monotonic() + 0.01

    monkeypatch.setattr(compat.hub, "sleep", sleep)
    with pytest.raises(Stop):
        app._flip_loop()
    assert slept[0] == app_mod.POLL_S, "not armed: poll"
    assert 0 <= slept[1] <= 0.01


def test_handlers_are_loud_and_take_their_events_from_the_source() -> None:
    assert set(PathFlipApp._role_changed.callers) == {source.EventRoleChanged}
    assert set(PathFlipApp._switch_gone.callers) == {source.ofp_event.EventOFPStateChange}
    assert PathFlipApp._switch_gone.callers[source.ofp_event.EventOFPStateChange].dispatchers == [
        compat.DEAD_DISPATCHER]
    assert all(hasattr(h, "__wrapped__") for h in (PathFlipApp._role_changed,
                                                   PathFlipApp._switch_gone))


def test_the_cookie_is_the_apps_own() -> None:
    assert PATHFLIP_COOKIE & ~ofmsgs.COOKIE_APP_MASK == 0
    others = {ofmsgs.LEARNING_COOKIE, ofmsgs.MARKER_COOKIE}
    assert PATHFLIP_COOKIE & ofmsgs.COOKIE_APP_MASK not in others
