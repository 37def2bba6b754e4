"""The pure parts of `sdnmig.discovery`: TXT records, CPU load from /proc samples, peer bookkeeping.

No zeroconf socket is opened here; tests/integration/test_discovery.py runs the advertisers.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdnmig.discovery import (LOAD_STEP, REFRESH_S, Advert, PeerView, cpu_load, decode_txt,
                              default_interfaces, default_scope, due, encode_txt, endpoint,
                              parse_txt, peer_record, stat_ticks)
from sdnmig.instances import Instance

AD = Advert(id="c2", host="10.254.0.2", of_port=6653,
            endpoint="redis://10.254.0.254:26379/erc:c2", load=0.25, scope="redis://10.254.0.254:26379")


def _wire(props: dict) -> bytes:
    """A TXT record's data as zeroconf puts it on the wire: length-prefixed key=value strings."""
    out = b""
    for k, v in props.items():
        item = f"{k}={v}".encode()
        out += bytes([len(item)]) + item
    return out


# -- TXT ------------------------------------------------------------------------------------------

def test_txt_carries_id_port_endpoint_load_and_scope() -> None:
    assert encode_txt(AD) == {"id": "c2", "of_port": "6653", "load": "0.250", "scope": AD.scope,
                              "endpoint": "redis://10.254.0.254:26379/erc:c2"}


def test_txt_round_trips_through_the_wire_format() -> None:
    assert decode_txt(parse_txt(_wire(encode_txt(AD))), AD.host) == AD


def test_txt_from_zeroconf_bytes_decodes_too() -> None:
    props = {k.encode(): v.encode() for k, v in encode_txt(AD).items()}
    assert decode_txt(props, AD.host) == AD


@given(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="="), min_size=1,
               max_size=20),
       st.integers(1, 65535), st.floats(0, 64, allow_nan=False), st.text(max_size=60))
def test_any_advert_round_trips(ident: str, port: int, load: float, scope: str) -> None:
    ad = Advert(ident, "127.0.0.1", port, endpoint("127.0.0.1", 26379, ident), round(load, 3),
                scope)
    assert decode_txt(parse_txt(_wire(encode_txt(ad))), "127.0.0.1") == ad


def test_parse_txt_keeps_the_first_of_a_repeated_key_and_values_with_equals() -> None:
    assert parse_txt(b"\x04id=a\x04id=b\x07x=1=2=3\x04flag") == {"id": "a", "x": "1=2=3",
                                                                  "flag": ""}


@pytest.mark.parametrize("props,why", [
    ({}, "no id"),
    ({"id": "", "of_port": "1"}, "no id"),
    ({"id": "c1"}, "bad of_port"),
    ({"id": "c1", "of_port": "x"}, "bad of_port"),
    ({"id": "c1", "of_port": "0"}, "out of range"),
    ({"id": "c1", "of_port": "70000"}, "out of range"),
    ({"id": "c1", "of_port": "1", "load": "high"}, "bad of_port or load"),
    ({"id": "c1", "of_port": "1", "load": "-1"}, "out of range"),
    ({"id": "c1", "of_port": "1", "load": "nan"}, "out of range"),
    ({"id": "c1", "of_port": "1", "load": "inf"}, "out of range"),
])
def test_a_foreign_or_broken_txt_is_refused_with_the_reason(props: dict, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode_txt(props, "127.0.0.1")


def test_endpoint_is_the_instance_channel_on_the_bus_or_empty() -> None:
    assert endpoint("127.0.0.1", 26379, "c1") == "redis://127.0.0.1:26379/erc:c1"
    assert endpoint("127.0.0.1", 0, "c1") == ""


def test_peer_record_has_exactly_the_documented_fields() -> None:
    rec = json.loads(peer_record(AD, 1700000000.12345))
    assert rec == {"id": "c2", "host": "10.254.0.2", "of_port": 6653, "endpoint": AD.endpoint,
                   "load": 0.25, "ts": 1700000000.123}


def test_defaults_scope_by_bus_and_interfaces_by_address(tmp_path: Path) -> None:
    inst = Instance(id="c1", of_port=1, redis_port=2, apps=[], master_of="",
                    dir=str(tmp_path / "c1"))
    assert default_scope(inst) == f"dir:{tmp_path}"
    inst.bus_host, inst.bus_port = "10.254.0.254", 26379
    assert default_scope(inst) == "redis://10.254.0.254:26379"
    assert default_interfaces("127.0.0.1") == ["127.0.0.1"]
    assert default_interfaces("10.254.0.3") == ["10.254.0.3"]


# -- load -----------------------------------------------------------------------------------------

# /proc/<pid>/stat of a manager whose name holds spaces and parentheses: utime 1500, stime 500
STAT = ("4242 (osken (mgr) x) S 1 4242 4242 0 -1 4194560 9000 0 0 0 1500 500 0 0 20 0 3 0 "
        "123456 987654321 12345 18446744073709551615 1 1 0 0 0 0 0 16781312 16386 0 0 0 17 1 0")


def test_stat_ticks_adds_user_and_system_time() -> None:
    assert stat_ticks(STAT) == 2000


def test_load_is_cpu_seconds_per_second_from_two_samples() -> None:
    assert cpu_load((2000, 10.0), (2050, 11.0), hz=100) == 0.5
    assert cpu_load((2000, 10.0), (2200, 11.0), hz=100) == 2.0  # two cores busy
    assert cpu_load((2000, 10.0), (2000, 12.0), hz=100) == 0.0
    assert cpu_load((2000, 10.0), (2001, 13.0), hz=100) == 0.003  # three decimals


def test_load_from_real_proc_text_samples() -> None:
    later = STAT.replace(" 1500 500 ", " 1530 520 ")
    assert cpu_load((stat_ticks(STAT), 5.0), (stat_ticks(later), 6.0), hz=100) == 0.5


def test_load_over_no_time_or_a_restarted_counter_is_zero() -> None:
    assert cpu_load((2000, 10.0), (2050, 10.0), hz=100) == 0.0
    assert cpu_load((2000, 10.0), (10, 11.0), hz=100) == 0.0


@given(st.integers(0, 10**9), st.integers(0, 10**6), st.floats(0.01, 100))
def test_load_is_never_negative_and_has_three_decimals(ticks: int, more: int, dt: float) -> None:
    load = cpu_load((ticks, 0.0), (ticks + more, dt), hz=100)
    assert load >= 0 and math.isclose(load, round(load, 3))


@pytest.mark.parametrize("advertised,load,since,expected", [
    (0.10, 0.14, 1.0, False),
    (0.10, 0.15, 1.0, True),     # moved by the step exactly
    (0.10, 0.05, 1.0, True),     # downwards too
    (0.10, 0.10, REFRESH_S - 0.1, False),
    (0.10, 0.10, REFRESH_S, True),
])
def test_publish_when_load_moved_a_step_or_the_refresh_is_due(
        advertised: float, load: float, since: float, expected: bool) -> None:
    assert LOAD_STEP == 0.05
    assert due(advertised, load, since) is expected


# -- PeerView -------------------------------------------------------------------------------------

def test_peers_of_the_same_scope_are_recorded_and_self_is_not() -> None:
    view = PeerView("c1", AD.scope)
    assert view.seen("c2._t", AD)
    assert not view.seen("c1._t", Advert("c1", "h", 1, "", 0.0, AD.scope))
    assert not view.seen("c9._t", Advert("c9", "h", 1, "", 0.0, "redis://elsewhere:1"))
    assert view.names == {"c2._t": "c2"}


def test_a_withdrawn_service_names_the_peer_to_forget_once() -> None:
    view = PeerView("c1", AD.scope)
    view.seen("c2._t", AD)
    assert view.gone("c2._t") == "c2"
    assert view.gone("c2._t") is None
    assert view.gone("never-seen._t") is None


def test_a_peer_still_advertised_under_another_name_is_kept() -> None:
    """The same id under a renamed service (a restart racing its own goodbye)."""
    view = PeerView("c1", AD.scope)
    view.seen("c2._t", AD)
    view.seen("c2-2._t", AD)
    assert view.gone("c2._t") is None
    assert view.gone("c2-2._t") == "c2"
