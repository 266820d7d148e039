"""The benchmarks' statistics (pure functions, no Slurm needed): the summary every benchmark
reports, and spawn latency's comparison of the variants."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.cli import summarize
from benchmarks.spawn_latency import compare


def test_summarize_twenty_samples() -> None:
    samples = [float(i) for i in range(1, 21)]  # 1..20
    s = summarize(samples)
    assert s["n"] == 20
    assert s["p50_s"] == 10.5
    # inclusive method: position 0.95 * (n - 1) = 18.05 -> 19 + 0.05 * (20 - 19)
    assert s["p95_s"] == pytest.approx(19.05)
    assert s["min_s"] == 1.0
    assert s["max_s"] == 20.0
    assert s["samples_s"] == samples


def test_summarize_matches_statistics_module_and_keeps_order() -> None:
    samples = [3.2104, 2.9, 4.75, 3.0, 6.1234]
    s = summarize(samples)
    assert s["p50_s"] == round(statistics.median(samples), 3)
    assert s["p95_s"] == round(statistics.quantiles(samples, n=20, method="inclusive")[18], 3)
    assert s["samples_s"] == [3.21, 2.9, 4.75, 3.0, 6.123]
    assert s["min_s"] == 2.9 and s["max_s"] == 6.123


def test_summarize_p95_lies_within_the_samples() -> None:
    samples = [2.0, 2.1, 2.2]
    s = summarize(samples)
    assert s["min_s"] <= s["p50_s"] <= s["p95_s"] <= s["max_s"]
    assert s["p95_s"] == pytest.approx(2.19)


def test_summarize_one_sample() -> None:
    s = summarize([2.5])
    assert s == {"n": 1, "p50_s": 2.5, "p95_s": 2.5, "min_s": 2.5, "max_s": 2.5, "samples_s": [2.5]}


def test_summarize_no_samples() -> None:
    with pytest.raises(ValueError):
        summarize([])


def test_compare_ratios_and_targets() -> None:
    results = {
        "bare": summarize([2.0, 2.5]),
        "stock": summarize([6.0, 6.0]),
        "factoryhub": summarize([2.75, 2.75]),
    }
    ratios, targets = compare(results)
    assert ratios["factoryhub_p50_over_bare_p50"] == pytest.approx(2.75 / 2.25, abs=1e-3)
    assert ratios["stock_p50_over_factoryhub_p50"] == pytest.approx(6.0 / 2.75, abs=1e-3)
    assert targets == {
        "factoryhub_p50_le_1.2x_bare": False,
        "factoryhub_1.8x_faster_than_stock_p50": True,
    }


def test_compare_with_a_variant_missing() -> None:
    ratios, targets = compare({"bare": summarize([2.0])})
    assert ratios == {"factoryhub_p50_over_bare_p50": None, "stock_p50_over_factoryhub_p50": None}
    assert targets == {
        "factoryhub_p50_le_1.2x_bare": None,
        "factoryhub_1.8x_faster_than_stock_p50": None,
    }
