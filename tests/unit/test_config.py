"""`ryu_apps.config`: the `[sdnmig]` settings of one controller instance.

`parse_dpids` is tested directly; `load` against a private oslo.config object parsing a
temporary config file (the platform's global CONF is swapped out, never touched).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ryu_apps import config
from ryu_apps.config import ConfigError, InstanceConfig, parse_dpids
from sdnmig import compat


# -- parse_dpids ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["*", " * ", "\t*\n"])
def test_star_means_every_switch(text: str) -> None:
    assert parse_dpids(text) is None


@pytest.mark.parametrize("text", ["", "   ", ",", " , ,"])
def test_empty_means_no_switch(text: str) -> None:
    assert parse_dpids(text) == frozenset()


@pytest.mark.parametrize("text,expected", [
    ("1", {1}),
    ("1,2, 3 ", {1, 2, 3}),
    ("0x1", {1}),
    ("0XfF", {255}),
    ("0x10,16", {16}),
    ("0", {0}),
    ("0xffffffffffffffff", {2**64 - 1}),
    (str(2**64 - 1), {2**64 - 1}),
    ("1,,2", {1, 2}),
])
def test_decimal_and_hex_dpids(text: str, expected: set) -> None:
    assert parse_dpids(text) == frozenset(expected)


@pytest.mark.parametrize("text,bad", [
    ("abc", "abc"),
    ("1,two", "two"),
    ("0x", "0x"),
    ("1.5", "1.5"),
    ("*,1", "*"),
    ("0x1g", "0x1g"),
])
def test_a_value_that_is_no_number_is_named_in_the_error(text: str, bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_dpids(text)
    msg = str(info.value)
    assert msg.startswith("[sdnmig] master_of: ")
    assert repr(bad) in msg and "not a datapath id" in msg


@pytest.mark.parametrize("text", ["-1", str(2**64), "0x10000000000000000"])
def test_a_dpid_outside_64_bits_is_rejected(text: str) -> None:
    with pytest.raises(ConfigError, match="out of range") as info:
        parse_dpids(text)
    assert repr(text) in str(info.value)


def test_zero_padded_dpid_is_refused_rather_than_misread() -> None:
    """OVS and the platform print dpids as 16 hex digits ('0000000000000010'); read as decimal
    that would be 10, as hex 16. Refusing it is the safe choice (see the report for the
    usability note); it must never be silently accepted as either."""
    with pytest.raises(ConfigError, match="not a datapath id"):
        parse_dpids("0000000000000010")


@given(st.sets(st.integers(0, 2**64 - 1), max_size=8), st.data())
def test_any_set_of_dpids_round_trips_in_any_notation(dpids: set, data: st.DataObject) -> None:
    parts = [data.draw(st.sampled_from([str(d), hex(d), hex(d).upper().replace("0X", "0x")]))
             for d in dpids]
    assert parse_dpids(" , ".join(parts)) == frozenset(dpids)


def test_wants_master_follows_master_of() -> None:
    def cfg(master_of: Optional[frozenset]) -> InstanceConfig:
        return InstanceConfig("c1", "127.0.0.1", 6379, None, master_of, 3.0, 60, 256)

    assert cfg(None).wants_master(12345)
    assert not cfg(frozenset()).wants_master(1)
    assert cfg(frozenset({1, 2})).wants_master(2) and not cfg(frozenset({1, 2})).wants_master(3)


# -- load -----------------------------------------------------------------------------------------

@pytest.fixture
def conf_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write an [sdnmig] section, point a fresh ConfigOpts at it, and return config.load."""
    def write(**opts: Any) -> InstanceConfig:
        path = tmp_path / "controller.conf"
        path.write_text("[DEFAULT]\n[sdnmig]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items()))
        conf = compat.cfg.ConfigOpts()
        conf(args=["--config-file", str(path)], project="sdnmig-test", default_config_files=[])
        monkeypatch.setattr(compat.cfg, "CONF", conf)
        return config.load()
    return write


def test_load_defaults(conf_file: Any) -> None:
    cfg = conf_file()
    assert cfg == InstanceConfig(instance_id="c0", redis_host="127.0.0.1", redis_port=6379,
                                 redis_password=None, master_of=None, role_timeout=3.0,
                                 flow_idle_timeout=60, commit_batch=256, install_flows=True)


def test_load_reads_every_option_and_the_password_file(conf_file: Any, tmp_path: Path) -> None:
    pw = tmp_path / "redis.password"
    pw.write_text("s3cret\n")
    cfg = conf_file(instance_id="c2", redis_host="10.0.0.2", redis_port=16380,
                    redis_password_file=pw, master_of="1, 0x2", role_timeout=0.5,
                    flow_idle_timeout=0, install_flows="false", commit_batch=1)
    assert cfg == InstanceConfig("c2", "10.0.0.2", 16380, "s3cret", frozenset({1, 2}), 0.5, 0, 1,
                                 install_flows=False)


def test_load_names_a_missing_password_file(conf_file: Any, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match="redis_password_file") as info:
        conf_file(redis_password_file=missing)
    assert str(missing) in str(info.value)


def test_load_reports_a_bad_master_of(conf_file: Any) -> None:
    with pytest.raises(ConfigError, match="master_of"):
        conf_file(master_of="s1")


def test_load_reports_a_value_of_the_wrong_type_as_config_error(conf_file: Any) -> None:
    with pytest.raises(ConfigError, match=r"^\[sdnmig\] "):
        conf_file(redis_port="http")


@pytest.mark.parametrize("opts,fragment", [
    ({"redis_port": 0}, "not a TCP port"),
    ({"redis_port": 65536}, "not a TCP port"),
    ({"role_timeout": 0}, "role_timeout"),
    ({"commit_batch": 0}, "commit_batch"),
    ({"flow_idle_timeout": -1}, "flow_idle_timeout"),
])
def test_load_rejects_out_of_range_values(conf_file: Any, opts: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        conf_file(**opts)


def test_load_tolerates_options_registered_already(monkeypatch: pytest.MonkeyPatch) -> None:
    """BUG: load() means to ignore oslo.config's DuplicateOptError, but names it as
    `compat.cfg.DuplicateOptError`, which neither os_ken.cfg nor ryu.cfg exports: when the error
    happens, evaluating the except clause raises AttributeError instead."""
    oslo = compat.cfg.oslo_config.cfg
    real = compat.cfg.ConfigOpts()
    real(args=[], project="sdnmig-test", default_config_files=[])

    class DuplicatingConf:
        def register_opts(self, opts: Any, group: Any = None) -> None:
            real.register_opts(opts, group=group)
            raise oslo.DuplicateOptError("instance_id")

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    monkeypatch.setattr(compat.cfg, "CONF", DuplicatingConf())
    assert config.load().instance_id == "c0"


def test_events_source_and_lime_spares(conf_file: Any) -> None:
    conf_file()
    assert config.events_source() == "platform" and config.lime_spares() == frozenset()
    conf_file(events="lime", lime_spares="0x103, 0x101")
    assert config.events_source() == "lime" and config.lime_spares() == {0x101, 0x103}
    conf_file(lime_reserved="1:3, 0x2:3,1:4")
    assert config.lime_reserved() == {1: {3, 4}, 2: {3}}
    conf_file(lime_reserved="1-3")
    with pytest.raises(ConfigError, match="not dpid:port"):
        config.lime_reserved()
    conf_file(events="shim")
    with pytest.raises(ConfigError, match="events must be"):
        config.events_source()


def test_lime_settle_ms(conf_file: Any) -> None:
    conf_file()
    assert config.lime_settle_s() == 0.02
    conf_file(lime_settle_ms="0")
    assert config.lime_settle_s() == 0.0
    conf_file(lime_settle_ms="-1")
    with pytest.raises(ConfigError, match="lime_settle_ms must be between 0 and 10000, not -1"):
        config.lime_settle_s()


def test_lime_hidden(conf_file: Any) -> None:
    conf_file()
    assert config.lime_hidden() == frozenset()
    conf_file(lime_hidden="0x30, 7")
    assert config.lime_hidden() == {0x30, 7}


def test_pathflip_defaults_and_choices(conf_file: Any) -> None:
    conf_file()
    assert config.pathflip() == config.PathflipConfig((0x11, 0x12, 0x13, 0x14), 1, 2, 4, 1.0)
    conf_file(pathflip_switches="1,2,3,4", pathflip_ports="2,1,0x5", pathflip_period_s="0.5")
    assert config.pathflip() == config.PathflipConfig((1, 2, 3, 4), 2, 1, 5, 0.5)


@pytest.mark.parametrize("opts, fragment", [
    ({"pathflip_switches": "1,2,3"}, "four different switches"),
    ({"pathflip_switches": "1,2,3,3"}, "four different switches"),
    ({"pathflip_switches": "1,2,x,4"}, "numbers separated by commas"),
    ({"pathflip_ports": "1,1,4"}, "three different ports"),
    ({"pathflip_ports": "1,2,0"}, "three different ports"),
    ({"pathflip_ports": "1,2,0xffffff00"}, "three different ports"),
    ({"pathflip_period_s": "0"}, "between 0.05 and 3600"),
])
def test_pathflip_refuses(conf_file: Any, opts: dict, fragment: str) -> None:
    conf_file(**opts)
    with pytest.raises(ConfigError, match=fragment):
        config.pathflip()
