"""The job-tracking benchmark's pure functions: statistics, sdiag parsing, rates."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.job_tracking.stats import (
    descendants,
    detection_targets,
    net_of,
    parse_sdiag,
    process_rates,
    rpc_delta,
    rpc_rates,
    summarize,
)

# Captured with `sdiag` on the local factory (slurm-wlm 22.05.8), 2026-11-23.
SDIAG_SAMPLE = """\
*******************************************************
sdiag output at Mon Nov 23 01:32:58 2026 (1795397578)
Data since      Mon Nov 23 01:30:57 2026 (1795397457)
*******************************************************
Server thread count:  3
Agent queue size:     0
Agent count:          0
Agent thread count:   0
DBD Agent queue size: 0

Jobs submitted: 12
Jobs started:   11
Jobs completed: 1
Jobs canceled:  10
Jobs failed:    0

Job states ts:  Mon Nov 23 01:32:55 2026 (1795397575)
Jobs pending:   0
Jobs running:   1

Main schedule statistics (microseconds):
\tLast cycle:   171
\tMax cycle:    1035
\tTotal cycles: 30
\tMean cycle:   229
\tMean depth cycle:  0
\tCycles per minute: 15
\tLast queue length: 1

Backfilling stats
\tTotal backfilled jobs (since last slurm start): 0
\tTotal backfilled jobs (since last stats cycle start): 0
\tTotal backfilled heterogeneous job components: 0
\tTotal cycles: 0
\tLast cycle when: None
\tLast cycle: 0
\tMax cycle:  0
\tLast depth cycle: 0
\tLast depth cycle (try sched): 0
\tLast queue length: 0
\tLast table size: 0

Latency for 1000 calls to gettimeofday(): 23 microseconds

Remote Procedure Call statistics by message type
\tREQUEST_JOB_INFO                        ( 2003) count:246    ave_time:308    total_time:75958
\tREQUEST_PARTITION_INFO                  ( 2009) count:245    ave_time:192    total_time:47142
\tREQUEST_FED_INFO                        ( 2049) count:51     ave_time:171    total_time:8748
\tREQUEST_JOB_USER_INFO                   ( 2039) count:17     ave_time:196    total_time:3342
\tREQUEST_SUBMIT_BATCH_JOB                ( 4003) count:16     ave_time:673    total_time:10775
\tREQUEST_COMPLETE_BATCH_SCRIPT           ( 5018) count:11     ave_time:314    total_time:3461
\tREQUEST_JOB_INFO_SINGLE                 ( 2021) count:11     ave_time:251    total_time:2761
\tREQUEST_KILL_JOB                        ( 5032) count:10     ave_time:444    total_time:4448
\tMESSAGE_EPILOG_COMPLETE                 ( 6012) count:9      ave_time:118    total_time:1066
\tREQUEST_PING                            ( 1008) count:4      ave_time:184    total_time:738
\tACCOUNTING_UPDATE_MSG                   (10001) count:4      ave_time:466    total_time:1865
\tREQUEST_NODE_INFO_SINGLE                ( 2040) count:3      ave_time:182    total_time:546
\tMESSAGE_NODE_REGISTRATION_STATUS        ( 1002) count:1      ave_time:157    total_time:157

Remote Procedure Call statistics by user
\troot            (       0) count:602    ave_time:242    total_time:146013
\tfhtest6         (    1009) count:4      ave_time:509    total_time:2038
\tfhtest1         (    1002) count:4      ave_time:549    total_time:2199
\tslurm           (   64030) count:4      ave_time:466    total_time:1865
\tfhtest7         (    1010) count:3      ave_time:746    total_time:2238
\tfhtest8         (    1011) count:3      ave_time:668    total_time:2004
\tfhnoassoc       (    1029) count:2      ave_time:343    total_time:686
\tfhtest3         (    1006) count:2      ave_time:839    total_time:1679
\tfhtest-oidc-two (    1030) count:2      ave_time:582    total_time:1165
\tfhtest4         (    1007) count:1      ave_time:607    total_time:607
\tfhtest5         (    1008) count:1      ave_time:513    total_time:513

Pending RPC statistics
\tNo pending RPCs
"""


def later(snapshot: dict, by_type: dict[str, int], by_user: dict[str, int], secs: int) -> dict:
    """``snapshot`` plus some RPCs, ``secs`` later (same statistics period)."""
    out = {
        "at": snapshot["at"] + secs,
        "since": snapshot["since"],
        "by_type": dict(snapshot["by_type"]),
        "by_user": dict(snapshot["by_user"]),
    }
    for section, extra in (("by_type", by_type), ("by_user", by_user)):
        for name, n in extra.items():
            out[section][name] = out[section].get(name, 0) + n
    return out


# ------------------------------------------------------------------ summarize


def test_summarize_twenty_samples() -> None:
    s = summarize([float(i) for i in range(1, 21)])
    assert s["n"] == 20
    assert s["p50"] == 10.5
    # inclusive method: position 0.95 * (n - 1) = 18.05 -> 19 + 0.05 * (20 - 19)
    assert s["p95"] == pytest.approx(19.05)
    assert (s["min"], s["max"], s["mean"]) == (1.0, 20.0, 10.5)
    assert s["samples"] == [float(i) for i in range(1, 21)]


def test_summarize_matches_statistics_module_and_rounds() -> None:
    samples = [1.2104, 0.9, 4.75, 1.0, 60.0]
    s = summarize(samples)
    assert s["p50"] == round(statistics.median(samples), 3)
    assert s["p95"] == round(statistics.quantiles(samples, n=20, method="inclusive")[18], 3)
    assert s["samples"] == [1.21, 0.9, 4.75, 1.0, 60.0]  # order kept


def test_summarize_one_sample_and_no_samples() -> None:
    s = summarize([2.5])
    assert s["p50"] == s["p95"] == s["max"] == 2.5
    with pytest.raises(ValueError):
        summarize([])


def test_summarize_without_samples_and_other_digits() -> None:
    s = summarize([12.345, 20.0, 7.77], digits=1, keep_samples=False)
    assert "samples" not in s
    assert s["min"] == 7.8 and s["p50"] == 12.3


def test_summarize_orders_its_quantiles() -> None:
    s = summarize([0.9, 1.3, 1.1, 1.0, 30.0])
    assert s["min"] <= s["p50"] <= s["p95"] <= s["max"]


# ------------------------------------------------------------------ sdiag


def test_parse_sdiag_real_sample() -> None:
    parsed = parse_sdiag(SDIAG_SAMPLE)
    assert parsed["at"] == 1795397578
    assert parsed["since"] == 1795397457
    assert parsed["by_type"]["REQUEST_JOB_INFO"] == 246
    assert parsed["by_type"]["REQUEST_JOB_INFO_SINGLE"] == 11
    assert parsed["by_type"]["ACCOUNTING_UPDATE_MSG"] == 4
    assert len(parsed["by_type"]) == 13
    assert sum(parsed["by_type"].values()) == 628
    assert parsed["by_user"]["root"] == 602
    assert parsed["by_user"]["fhtest-oidc-two"] == 2
    assert len(parsed["by_user"]) == 11
    # nothing from the schedule/backfill sections ("Total cycles: 30") leaks in
    assert "Total" not in parsed["by_type"] and "Total" not in parsed["by_user"]


def test_parse_sdiag_without_rpc_section_is_an_error() -> None:
    with pytest.raises(ValueError):
        parse_sdiag("sdiag: error: Unable to contact slurm controller\n")


def test_parse_sdiag_tolerates_missing_header() -> None:
    text = SDIAG_SAMPLE.split("Remote Procedure Call statistics by message type")[1]
    parsed = parse_sdiag("Remote Procedure Call statistics by message type" + text)
    assert parsed["at"] is None and parsed["since"] is None
    assert parsed["by_type"]["REQUEST_PING"] == 4


def test_rpc_delta_between_two_snapshots() -> None:
    before = parse_sdiag(SDIAG_SAMPLE)
    after = later(
        before,
        {"REQUEST_JOB_INFO": 180, "REQUEST_PARTITION_INFO": 180, "REQUEST_STATS_INFO": 1},
        {"root": 361},
        180,
    )
    d = rpc_delta(before, after)
    assert d["reset"] is False
    assert d["by_type"] == {
        "REQUEST_JOB_INFO": 180,
        "REQUEST_PARTITION_INFO": 180,
        "REQUEST_STATS_INFO": 1,
    }
    assert next(iter(d["by_type"])) == "REQUEST_JOB_INFO"  # largest first, then by name
    assert d["by_user"] == {"root": 361}
    assert "seconds_since_reset" not in d


def test_rpc_delta_after_a_reset_counts_since_the_reset() -> None:
    before = parse_sdiag(SDIAG_SAMPLE)
    after = {
        "at": before["at"] + 100,
        "since": before["at"] + 40,  # slurmctld restarted (or midnight) within the window
        "by_type": {"REQUEST_JOB_INFO": 60, "REQUEST_STATS_INFO": 1},
        "by_user": {"root": 61},
    }
    d = rpc_delta(before, after)
    assert d["reset"] is True
    assert d["by_type"] == {"REQUEST_JOB_INFO": 60, "REQUEST_STATS_INFO": 1}
    assert d["seconds_since_reset"] == 60
    rates = rpc_rates(d, 100.0, "fhtrack")
    assert rates["seconds"] == 60.0
    assert rates["request_job_info_per_minute"] == 60.0
    assert rates["reset_in_window"] is True


def test_rpc_delta_counter_going_down_is_a_reset() -> None:
    before = parse_sdiag(SDIAG_SAMPLE)
    after = later(before, {}, {}, 10)
    after["by_type"]["REQUEST_JOB_INFO"] = 5
    assert rpc_delta(before, after)["reset"] is True


def test_rpc_rates_per_minute() -> None:
    before = parse_sdiag(SDIAG_SAMPLE)
    # 3 minutes of stock polling for 20 users: one squeue -j per server per 30 s
    # (JOB_INFO_SINGLE + FED_INFO) plus someone else's squeue (JOB_INFO + PARTITION_INFO)
    after = later(
        before,
        {
            "REQUEST_JOB_INFO_SINGLE": 120,
            "REQUEST_FED_INFO": 120,
            "REQUEST_JOB_INFO": 30,
            "REQUEST_PARTITION_INFO": 30,
            "REQUEST_STATS_INFO": 1,
        },
        {"fhtrack01": 120, "root": 61, "fhtest1": 0},
        180,
    )
    r = rpc_rates(rpc_delta(before, after), 180.0, "fhtrack")
    assert r["request_job_info_per_minute"] == 10.0
    assert r["job_info_rpcs_per_minute"] == 50.0  # JOB_INFO + _SINGLE (+ USER_INFO)
    assert r["all_rpcs_per_minute"] == 100.0  # sdiag's own STATS_INFO left out
    assert r["rpcs_by_benchmark_users_per_minute"] == 40.0
    assert "REQUEST_STATS_INFO" not in r["by_type_per_minute"]
    assert r["by_type_per_minute"]["REQUEST_FED_INFO"] == 40.0
    with pytest.raises(ValueError):
        rpc_rates(rpc_delta(before, after), 0.0, "fhtrack")


def test_net_of_background() -> None:
    raw = {"all_rpcs_per_minute": 150.0}
    assert net_of(raw, {"all_rpcs_per_minute": 120.4}, "all_rpcs_per_minute") == 29.6
    assert net_of(raw, {"all_rpcs_per_minute": 200.0}, "all_rpcs_per_minute") == 0.0
    assert net_of(raw, None, "all_rpcs_per_minute") is None


# ------------------------------------------------------------------ processes, targets


def test_process_rates_by_name() -> None:
    names = ["squeue"] * 90 + ["runuser"] * 2 + ["sh"] * 2
    r = process_rates(names, 180.0)
    assert r["count"] == 94
    assert r["per_minute"] == pytest.approx(31.3)
    assert r["by_name_per_minute"] == {"squeue": 30.0, "runuser": 0.7, "sh": 0.7}
    assert list(r["by_name_per_minute"]) == ["squeue", "runuser", "sh"]
    assert process_rates([], 60.0)["per_minute"] == 0.0


def test_descendants_follow_the_parent_chain() -> None:
    table = {
        1: (0, "init", 0),
        100: (1, "jupyterhub", 5),
        101: (100, "node", 6),  # the proxy
        102: (100, "sh", 7),
        103: (102, "runuser", 8),
        104: (103, "squeue", 9),
        200: (1, "slurmstepd", 10),
        201: (200, "python3", 11),  # a user's server: not the hub's
        300: (999, "orphan", 12),  # parent unknown
    }
    assert descendants(table, 100) == {100, 101, 102, 103, 104}


def test_detection_target() -> None:
    assert detection_targets({"p95": 1.4}, 2.0) is True
    assert detection_targets({"p95": 2.01}, 2.0) is False
    assert detection_targets({"error": "x"}, 2.0) is None
    assert detection_targets(None, 2.0) is None
