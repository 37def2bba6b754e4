"""The VNM experiment's bookkeeping: samples tagged with the phase they lie in (a command's own
time in none), ping output read, a run summarised from iperf3's JSON as it comes, and the
headline and targets computed from raw runs. No root, no network."""
from __future__ import annotations

from typing import Any, Dict, List

import pytest

from experiments import vnm as exp
from sdnmig import vnm_phases as ph

STEPS = [{"command": c, "issued_s": 5.0 + 5.1 * k, "done_s": 5.1 + 5.1 * k, "ms": 100.0}
         for k, c in enumerate(ph.COMMANDS)]   # prepare 5.0-5.1, ..., finalize 20.3-20.4


@pytest.mark.parametrize("start,end,want", [
    (0.0, 1.0, None),              # slow start: no phase's
    (1.0, 2.0, "before"),
    (4.0, 5.0, "before"),
    (4.5, 5.05, None),             # prepare was running
    (5.1, 6.1, "prepare"),
    (9.1, 10.1, "prepare"),
    (10.1, 10.3, None),            # across migrate h1's issue
    (15.4, 15.9, "both moved"),
    (20.3, 20.35, None),           # finalize running
    (20.4, 99.0, "finalized"),
])
def test_a_sample_belongs_to_the_phase_it_lies_wholly_in(start: float, end: float, want: Any
                                                           ) -> None:
    assert ph.phase_of(STEPS, start, end, ph.WARMUP_S) == want


def test_only_throughput_has_a_warm_up() -> None:
    assert ph.phase_of(STEPS, 0.5, 0.5) == "before"


def test_periods_split_at_prepare_issued_and_finalize_answered() -> None:
    assert [ph.period_of(STEPS, t) for t in (4.99, 5.0, 12.0, 20.4, 20.41)] == [
        "before", "during", "during", "during", "after"]


PING_OUT = """PING 10.0.0.3 (10.0.0.3) 56(84) bytes of data.
[1000.500000] 64 bytes from 10.0.0.3: icmp_seq=1 ttl=64 time=0.300 ms
[1006.000000] 64 bytes from 10.0.0.3: icmp_seq=3 ttl=64 time=0.90 ms
[1021.000000] 64 bytes from 10.0.0.3: icmp_seq=4 ttl=64 time=0.41 ms

--- 10.0.0.3 ping statistics ---
4 packets transmitted, 3 received, 25% packet loss, time 3004ms
"""


def test_ping_output_read_per_answer() -> None:
    assert ph.ping_samples(PING_OUT) == [(1000.5, 1, 0.3), (1006.0, 3, 0.9), (1021.0, 4, 0.41)]


def _iperf(intervals: List[Dict[str, Any]], end: Dict[str, Any]) -> Dict[str, Any]:
    return {"intervals": [{"sum": s} for s in intervals], "end": end}


def tcp_run(mbits: List[float], algorithm: Any = "alap") -> Dict[str, Any]:
    received = _iperf([{"start": k, "end": k + (1.0 if k < 28 else 0.2),
                        "bits_per_second": m * 1e6} for k, m in enumerate(mbits)], {})
    sent = _iperf([], {"sum_sent": {"retransmits": 7}})
    return ph.summarise_run(algorithm, "tcp", 5.0, 1000.0, STEPS, sent, received, "")


def udp_run(lost: int, packets: int, algorithm: Any = "alap") -> Dict[str, Any]:
    received = _iperf([{"start": 0, "end": 1.0, "bits_per_second": 1e6, "packets": 1000,
                        "lost_packets": 0}],
                      {"sum": {"packets": packets, "lost_packets": lost,
                               "lost_percent": 100.0 * lost / packets, "seconds": 28.0},
                       "streams": [{"udp": {"out_of_order": 2}}]})
    sent = _iperf([], {"sum": {"packets": packets}})
    return ph.summarise_run(algorithm, "udp", 5.0, 1000.0, STEPS, sent, received, PING_OUT)


def test_a_tcp_run_keeps_every_second_and_tags_it() -> None:
    run = tcp_run([30.0] + [23.0] * 27)
    assert run["retransmits"] == 7 and len(run["intervals"]) == 28
    assert run["intervals"][0] == {"start": 0, "end": 1.0, "mbit": 30.0, "phase": None}
    shifted = ph.summarise_run("alap", "tcp", 5.0, 1000.0, STEPS, {"end": {"sum_sent": {}}},
                               _iperf([{"start": 4.0, "end": 5.0, "bits_per_second": 1e6}], {}),
                               "", offset=0.04)
    assert shifted["intervals"][0] == {"start": 4.04, "end": 5.04, "mbit": 1.0, "phase": None}
    assert shifted["iperf_offset_s"] == 0.04
    assert [iv["phase"] for iv in run["intervals"][1:5]] == ["before"] * 4
    assert run["intervals"][5]["phase"] is None           # 5-6 holds prepare's 5.0-5.1


def test_a_udp_run_counts_the_receivers_loss_and_tags_each_ping() -> None:
    run = udp_run(3, 28000)
    assert run["udp"] == {"packets": 28000, "lost": 3, "lost_pct": 3 / 280, "out_of_order": 2,
                          "sent": 28000, "seconds": 28.0}
    assert run["ping"] == {"sent": 4, "received": 3, "dup": 0}
    assert [(p["t"], p["period"], p["phase"]) for p in run["pings"]] == [
        (0.5, "before", "before"), (6.0, "during", "prepare"), (21.0, "after", "finalized")]


def test_unreadable_ping_output_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="ping's summary"):
        ph.summarise_run("alap", "udp", 5.0, 1000.0, STEPS, {"end": {"sum": {"packets": 1}}},
                         _iperf([], {"sum": {"packets": 1, "lost_packets": 0,
                                             "lost_percent": 0, "seconds": 1}}), "")


def _trace(before: float, moved: float) -> List[float]:
    """28 seconds: slow start, 'before' at one rate, 'both moved' (15.2-20.3) at another."""
    return [30.0] + [before] * 14 + [moved] * 6 + [before] * 7


def test_headline_from_raw_runs() -> None:
    runs = [tcp_run(_trace(23.0, 23.0), "alap"), tcp_run(_trace(20.0, 19.0), "alap"),
            tcp_run(_trace(23.0, 20.0), "asap"), tcp_run(_trace(23.0, 23.0), None),
            udp_run(1, 28000, "alap"), udp_run(1, 28000, "alap"), udp_run(10, 28000, "asap"),
            udp_run(0, 28000, None)]
    summary = exp.summarise(runs)
    assert summary["baseline"]["tcp_runs"] == 1
    assert summary["alap"]["phase_ratio_per_run"]["both moved"] == [1.0, 0.95]
    h = exp.headline_of(summary)
    assert h["alap_tput_ratio_both_moved"] == pytest.approx(0.975)
    assert h["asap_tput_ratio_both_moved"] == pytest.approx(20 / 23, abs=1e-4)
    assert h["alap_udp_loss_pct"] == pytest.approx(100 * 2 / 56000, abs=1e-4)
    assert h["asap_udp_loss_pct"] == pytest.approx(100 * 10 / 28000, abs=1e-4)
    assert h["baseline_udp_loss_pct"] == 0
    # ALAP's pings: 0.3 ms before, 0.9 ms during (in each run): three times as long
    assert h["rtt_ratio_during"] == pytest.approx(3.0)
    met = exp.targets_met(summary, h)
    assert met["alap_tput_ratio_both_moved >= 0.95"] is True
    assert met["asap both moved lower than alap (every run)"] is True
    assert met["alap_udp_loss_pct < 0.1"] is True
    assert met["asap_udp_loss_pct < 0.44"] is True
    assert met["rtt_ratio_during <= 2"] is False


def test_a_configuration_not_run_has_no_figure() -> None:
    summary = exp.summarise([tcp_run(_trace(23.0, 23.0), None)])
    h = exp.headline_of(summary)
    assert h["alap_tput_ratio_both_moved"] is None and h["rtt_ratio_during"] is None
    assert exp.targets_met(summary, h)["asap both moved lower than alap (every run)"] is None


def test_asap_is_lower_only_when_every_run_is() -> None:
    runs = [tcp_run(_trace(23.0, 22.0), "alap"), tcp_run(_trace(23.0, 23.0), "alap"),
            tcp_run(_trace(23.0, 22.5), "asap"), tcp_run(_trace(23.0, 20.0), "asap")]
    summary = exp.summarise(runs)
    assert summary["asap"]["phase_mbit"]["both moved"] < summary["alap"]["phase_mbit"]["both moved"]
    assert exp.targets_met(summary, exp.headline_of(summary))[
        "asap both moved lower than alap (every run)"] is False


def test_the_receivers_short_last_interval_is_no_phases() -> None:
    run = tcp_run([23.0] * 28 + [2.0])
    run2 = tcp_run([23.0] * 28)
    last = run["intervals"][-1]
    assert last["phase"] is None
    assert ph.phase_mbit(run, "finalized") == ph.phase_mbit(run2, "finalized") == 23.0


def test_a_failed_run_is_counted_apart() -> None:
    runs = [tcp_run(_trace(23.0, 23.0), "alap"),
            {"algorithm": "asap", "traffic": "udp", "bw_mbit": 24.0, "error": "RuntimeError: x"}]
    summary = exp.summarise(runs)
    assert summary["failed"] == [{"algorithm": "asap", "traffic": "udp", "bw_mbit": 24.0,
                                  "error": "RuntimeError: x"}]
    assert "asap" not in summary and summary["alap"]["tcp_runs"] == 1


def test_runs_without_a_link_cap_are_summarised_apart(tmp_path: Any) -> None:
    capped = [tcp_run(_trace(23.0, 22.8), "alap"), tcp_run(_trace(23.0, 22.9), "asap"),
              udp_run(0, 28000, "alap")]
    free = [tcp_run(_trace(800.0, 720.0), "alap"), tcp_run(_trace(800.0, 560.0), "asap")]
    for r in capped:
        r["bw_mbit"] = 24.0
    for r in free:
        r["bw_mbit"] = 0.0
    summary = exp.summarise(capped + free)
    assert summary["alap"]["phase_mbit"]["before"] == 23.0          # the capped runs only
    assert summary["uncapped"]["asap"]["phase_ratio"]["both moved"] == 0.7
    h = exp.headline_of(summary)
    assert h["alap_tput_ratio_both_moved"] == pytest.approx(22.8 / 23, abs=1e-4)
    met = exp.targets_met(summary, h)
    assert met["asap both moved lower than alap (every run)"] is False
    assert met["asap both moved lower than alap, no link cap (every run)"] is True
    png = exp.plot(tmp_path / "vnm.png", capped + free, summary, 24.0)
    assert png is None or png.stat().st_size > 0   # None: no matplotlib (real Ryu's venv)
