"""The tabular helpers: the smart-meter CSV generator and its ground truth, cleaning that drops
exactly the spoiled rows, the join, the two-phase aggregation, Parquet output."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from factoryhub.helpers import tabular

OPTIONS = {"days": 6, "readings_per_day": 24, "n_partitions": 3, "seed": 5}


@pytest.fixture(scope="module")
def meters() -> pd.DataFrame:
    return tabular.make_meters(60, seed=5)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, dict]:
    root = tmp_path_factory.mktemp("meters")
    meters, counts = tabular.write_dataset(root, n_meters=60, **OPTIONS)
    return root, meters, counts


def test_meters_table(meters: pd.DataFrame) -> None:
    assert list(meters.columns) == ["meter_id", "region", "tariff"]
    assert meters["meter_id"].is_unique and meters["meter_id"].iloc[0] == "M000000"
    assert set(meters["region"]) <= set(tabular.REGIONS)
    assert set(meters["tariff"]) <= set(tabular.TARIFFS)
    pd.testing.assert_frame_equal(meters, tabular.make_meters(60, seed=5))


def test_partitions_cover_the_days() -> None:
    assert tabular.partition_days(14, 7) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12),
                                              (12, 14)]  # fmt: skip
    assert tabular.partition_days(3, 10) == [(0, 1), (1, 2), (2, 3)]
    assert tabular.partition_days(10, 3) == [(0, 3), (3, 7), (7, 10)]


def test_the_generator_is_deterministic_and_spoils_known_amounts(meters: pd.DataFrame) -> None:
    df, counts = tabular.generate_readings(meters, 1, **OPTIONS)
    again, _ = tabular.generate_readings(meters, 1, **OPTIONS)
    pd.testing.assert_frame_equal(df, again)
    other, _ = tabular.generate_readings(meters, 1, **{**OPTIONS, "seed": 6})
    assert not df.equals(other)
    good_rows = len(meters) * 2 * 24  # partition 1 of 3 over 6 days: 2 days
    assert counts["rows"] == len(df) == good_rows + counts["duplicate"]
    for reason, rate in tabular.RATES.items():
        assert counts[reason] == round(rate * good_rows) > 0, reason
    assert list(df.columns) == ["timestamp", "meter_id", "kwh"]
    assert df.duplicated().sum() == counts["duplicate"]
    first = pd.to_datetime(df["timestamp"], format=tabular.TIME_FORMAT, errors="coerce").min()
    assert first == pd.Timestamp("2025-01-03")


def test_cleaning_drops_exactly_what_was_injected(
    dataset: tuple[Path, pd.DataFrame, dict],
) -> None:
    root, meters, counts = dataset
    files = sorted((root / "readings").glob("part-*.csv"))
    assert [f.name for f in files] == ["part-0000.csv", "part-0001.csv", "part-0002.csv"]
    assert pd.read_csv(root / "meters.csv", dtype=str).equals(meters)
    found = dict.fromkeys(tabular.REASONS, 0)
    rows = kept_rows = 0
    for path in files:
        raw = tabular.read_readings(path)
        kept, dropped = tabular.clean(raw, meters, readings_per_day=24)
        rows, kept_rows = rows + len(raw), kept_rows + len(kept)
        found = {r: found[r] + dropped[r] for r in tabular.REASONS}
        assert kept["timestamp"].notna().all() and (kept["kwh"] >= 0).all()
        assert kept["meter_id"].isin(meters["meter_id"]).all()
        assert not kept.duplicated().any()
        assert list(kept.columns) == ["timestamp", "meter_id", "kwh"]
    assert rows == counts["rows"]
    assert found == {r: counts[r] for r in tabular.REASONS}
    assert (
        kept_rows
        == rows - sum(found.values())
        == len(meters) * 6 * 24 - sum(counts[r] for r in tabular.REASONS if r != "duplicate")
    )


def test_each_check_names_its_reason(meters: pd.DataFrame) -> None:
    good = ("2025-01-01 10:00:00", "M000001", "1.5")
    rows = [
        good,
        ("2025-02-30 10:00:00", "M000001", "1.5"),
        ("2025-01-01 11:00:00", "M999999", "1.5"),
        ("2025-01-01 12:00:00", "M000001", "n/a"),
        ("2025-01-01 13:00:00", "M000001", "-0.2"),
        ("2025-01-01 14:00:00", "M000001", "31"),
        good,
        ("2025-01-01 15:00:00", "M000001", "30"),
    ]
    df = pd.DataFrame(rows, columns=["timestamp", "meter_id", "kwh"], dtype="str")
    flagged = tabular.flag_readings(df, meters, readings_per_day=24, max_kw=30.0)
    assert flagged["reason"].tolist() == ["", *tabular.REASONS, ""]
    quarter_hours = tabular.flag_readings(df, meters, readings_per_day=96, max_kw=30.0)
    assert quarter_hours["reason"].iloc[7] == "outlier_kwh"  # 30 kWh in 15 minutes
    assert tabular.reason_counts(flagged) == dict.fromkeys(tabular.REASONS, 1)
    assert len(tabular.drop_flagged(flagged)) == 2


def test_join_and_two_phase_aggregation(dataset: tuple[Path, pd.DataFrame, dict]) -> None:
    root, meters, _ = dataset
    parts = []
    for path in sorted((root / "readings").glob("part-*.csv")):
        kept, _ = tabular.clean(tabular.read_readings(path), meters)
        parts.append(tabular.join_meters(kept, meters))
    readings = pd.concat(parts, ignore_index=True)
    assert readings[["region", "tariff"]].notna().all().all()
    by_meter = meters.set_index("meter_id")
    assert (readings["region"].to_numpy() == by_meter.loc[readings["meter_id"], "region"]).all()

    partials = pd.concat([tabular.hourly_partial(p) for p in parts])
    features = tabular.daily_features(partials, meters)
    whole = tabular.daily_features(tabular.hourly_partial(readings), meters)
    pd.testing.assert_frame_equal(features, whole)  # per partition, then combined: the same
    assert features["kwh"].sum() == pytest.approx(readings["kwh"].sum())
    assert features["readings"].sum() == len(readings)
    assert features["date"].nunique() == 6
    groups = meters.groupby(["region", "tariff"]).size()
    assert len(features) == 6 * len(groups)
    assert features["peak_hour"].between(0, 23).all()
    assert (features["peak_hour_kwh"] <= features["kwh"]).all()
    assert (
        (features["kwh_per_meter"] * features["meters"]).round(6).equals(features["kwh"].round(6))
    )
    ev = features.loc[features["tariff"] == "ev", "peak_hour"]
    assert ev.lt(5).all()  # electric cars charge at night
    assert features.loc[features["tariff"] == "flat", "peak_hour"].between(17, 21).all()


def test_write_parquet(tmp_path: Path) -> None:
    df = pd.DataFrame({"date": pd.to_datetime(["2025-01-01"]), "kwh": [1.5], "region": ["east"]})
    path = tabular.write_parquet(df, tmp_path / "features" / "daily.parquet")
    assert path == tmp_path / "features" / "daily.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(path), df)


def test_prepare_dataset_removes_old_readings(tmp_path: Path, meters: pd.DataFrame) -> None:
    (tmp_path / "readings").mkdir()
    (tmp_path / "readings" / "part-0099.csv").write_text("old")
    (tmp_path / "readings" / "notes.txt").write_text("mine")
    tabular.prepare_dataset(tmp_path, meters)
    assert sorted(p.name for p in (tmp_path / "readings").iterdir()) == ["notes.txt"]
    assert (tmp_path / "meters.csv").is_file()
