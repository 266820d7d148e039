"""Smart-meter readings: a partitioned CSV dataset with known defects, and the steps that clean,
join, aggregate and write it.

The dataset is a ``meters.csv`` table (``meter_id, region, tariff``) and ``readings/part-XXXX.csv``
files (``timestamp, meter_id, kwh``), one per range of days, written as text with the defects real
exports have: bad timestamps, unknown meters, missing, negative and outlier readings, duplicate
rows. Every step is a pure function of one pandas DataFrame (a partition): ``step(df)`` in
pandas, ``ddf.map_partitions(step, ...)`` in Dask. Aggregation has two phases: a partial per
partition (:func:`hourly_partial`), then a combine on the small result (:func:`daily_features`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REGIONS = ("north", "south", "east", "west", "central")
TARIFFS = ("flat", "time_of_use", "ev")
# Why a row is dropped, in the order the checks run (a row gets the first that applies).
REASONS = (
    "bad_timestamp",
    "unknown_meter",
    "missing_kwh",
    "negative_kwh",
    "outlier_kwh",
    "duplicate",
)
# The share of rows of each partition the generator spoils, by reason.
RATES = {
    "bad_timestamp": 0.004,
    "unknown_meter": 0.003,
    "missing_kwh": 0.01,
    "negative_kwh": 0.004,
    "outlier_kwh": 0.003,
    "duplicate": 0.01,
}
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
KEYS = ["date", "region", "tariff"]
_BAD_TIMES = ("2025-02-30 10:00:00", "31/01/2025 10:00", "not recorded", "2025-01-05 24:30:00", "")
_MISSING = ("", "n/a", "NaN")
_REGION_FACTOR = {"north": 1.25, "south": 0.85, "east": 1.0, "west": 0.95, "central": 1.1}


def make_meters(n_meters: int, *, seed: int = 0) -> pd.DataFrame:
    """The meters table: ``meter_id`` (``M000000``, ...), ``region`` and ``tariff``."""
    rng = np.random.default_rng([seed, 1])
    return pd.DataFrame(
        {
            "meter_id": [f"M{i:06d}" for i in range(n_meters)],
            "region": rng.choice(REGIONS, n_meters),
            "tariff": rng.choice(TARIFFS, n_meters, p=[0.5, 0.3, 0.2]),
        }
    )


def partition_days(days: int, n_partitions: int) -> list[tuple[int, int]]:
    """The ``[first, stop)`` day ranges of the partitions: at most one partition a day."""
    edges = np.linspace(0, days, min(days, n_partitions) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in pairwise(edges)]


def _consumption(meters: pd.DataFrame, hours: np.ndarray, weekend: np.ndarray, seed: int,
                 rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """Power (kW) of every meter (rows) at every time (columns): a household's base load, a
    morning and an evening peak, cheap night hours on time-of-use tariffs, night charging on EV
    tariffs, more at weekends, and noise."""
    base = np.random.default_rng([seed, 3]).lognormal(-0.7, 0.35, len(meters))[:, None]
    region = meters["region"].map(_REGION_FACTOR).to_numpy(float)[:, None]
    tariff = meters["tariff"].to_numpy()[:, None]
    h = hours[None, :]
    load = 0.5 + 0.6 * np.exp(-(((h - 8) / 2) ** 2)) + 1.2 * np.exp(-(((h - 19) / 2.5) ** 2))
    load = np.where((tariff == "time_of_use") & (h >= 17) & (h < 21), 0.5 * load, load)
    load = load + np.where((tariff == "time_of_use") & (h < 6), 0.6, 0.0)
    load = load + np.where((tariff == "ev") & (h < 5), 2.0, 0.0)
    noise = rng.lognormal(0.0, 0.15, (len(meters), len(hours)))
    return np.clip(base * region * load * np.where(weekend, 1.15, 1.0)[None, :] * noise, 0.02, 20)


def generate_readings(
    meters: pd.DataFrame,
    part: int,
    *,
    days: int,
    readings_per_day: int = 24,
    n_partitions: int = 7,
    start: str = "2025-01-01",
    seed: int = 0,
    rates: Mapping[str, float] | None = None,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Partition ``part`` of the readings, as text (what a CSV file holds), and how many rows it
    has and how many it spoiled, by reason (each spoiled row has one defect; a duplicate is a
    copy of a good row placed right after it). Deterministic in (seed, part)."""
    first, stop = partition_days(days, n_partitions)[part]
    rng = np.random.default_rng([seed, 2, part])
    slots = np.arange(first * readings_per_day, stop * readings_per_day)
    times = pd.Timestamp(start) + pd.to_timedelta(slots * (86400 // readings_per_day), unit="s")
    hours_each = 24 / readings_per_day
    kw = _consumption(
        meters, (slots % readings_per_day) * hours_each, times.day_of_week >= 5, seed, rng
    )
    n = kw.size
    ts = np.tile(times.strftime(TIME_FORMAT).to_numpy(object), len(meters))
    meter = np.repeat(meters["meter_id"].to_numpy(object), len(slots))
    kwh = np.char.mod("%.3f", (kw * hours_each).ravel()).astype(object)
    counts = {r: round(rate * n) for r, rate in {**RATES, **(rates or {})}.items()}
    order, pos, picked = rng.permutation(n), 0, {}
    for reason in REASONS:
        picked[reason], pos = order[pos : pos + counts[reason]], pos + counts[reason]
    ts[picked["bad_timestamp"]] = rng.choice(_BAD_TIMES, counts["bad_timestamp"])
    unknown = rng.integers(0, 1000, counts["unknown_meter"]) + len(meters)
    meter[picked["unknown_meter"]] = [f"M{i:06d}" for i in unknown]
    kwh[picked["missing_kwh"]] = rng.choice(_MISSING, counts["missing_kwh"])
    negative = -rng.uniform(0.05, 2.0, counts["negative_kwh"])  # "-0.000" would not count
    kwh[picked["negative_kwh"]] = np.char.mod("%.3f", negative)
    outlier = rng.uniform(100.0, 1000.0, counts["outlier_kwh"]) * hours_each
    kwh[picked["outlier_kwh"]] = np.char.mod("%.3f", outlier)
    rows = np.concatenate([np.arange(n), picked["duplicate"]])  # each copy right after its row
    rows = rows[
        np.argsort(np.concatenate([np.arange(n), picked["duplicate"] + 0.5]), kind="stable")
    ]
    df = pd.DataFrame({"timestamp": ts[rows], "meter_id": meter[rows], "kwh": kwh[rows]})
    return df, {"rows": len(df), **counts}


def prepare_dataset(root: str | Path, meters: pd.DataFrame) -> Path:
    """Create ``root/readings``, remove the readings of an earlier run, write ``meters.csv``."""
    root = Path(root).expanduser()
    (root / "readings").mkdir(parents=True, exist_ok=True)
    for old in (root / "readings").glob("part-*.csv"):
        old.unlink()
    meters.to_csv(root / "meters.csv", index=False)
    return root


def write_readings(
    root: str | Path, meters: pd.DataFrame, part: int, **options: Any
) -> dict[str, int]:
    """Write ``root/readings/part-{part:04d}.csv`` (see :func:`generate_readings`); its counts."""
    df, counts = generate_readings(meters, part, **options)
    df.to_csv(Path(root) / "readings" / f"part-{part:04d}.csv", index=False)
    return counts


def write_dataset(root: str | Path, *, n_meters: int, seed: int = 0, **options: Any
                  ) -> tuple[pd.DataFrame, dict[str, int]]:  # fmt: skip
    """The whole dataset in this process: ``(meters, counts)``, counts summed over partitions
    (``options``: of :func:`generate_readings`)."""
    meters = make_meters(n_meters, seed=seed)
    root = prepare_dataset(root, meters)
    n_parts = len(partition_days(options["days"], options.get("n_partitions", 7)))
    totals: Counter[str] = Counter()
    for part in range(n_parts):
        totals.update(write_readings(root, meters, part, seed=seed, **options))
    return meters, dict(totals)


def read_readings(path: str | Path) -> pd.DataFrame:
    """One readings file as text, as Dask's ``dd.read_csv(..., dtype=str)`` reads it."""
    return pd.read_csv(path, dtype=str)


def flag_readings(df: pd.DataFrame, meters: pd.DataFrame, *, readings_per_day: int = 24,
                  max_kw: float = 30.0) -> pd.DataFrame:  # fmt: skip
    """The partition parsed (``timestamp`` as datetime, ``kwh`` as float) with ``reason``: the
    first check failed, in :data:`REASONS` order, or "" (kept). Outliers: above ``max_kw`` of
    average power over the reading's interval. Duplicates are looked for within the partition:
    the files are cut by day, so a reading and its copy are in the same file."""
    ts = pd.to_datetime(df["timestamp"], format=TIME_FORMAT, errors="coerce")
    kwh = pd.to_numeric(df["kwh"], errors="coerce").astype("float64")
    meter = df["meter_id"].astype("str")
    checks = [ts.isna(), ~meter.isin(meters["meter_id"]), kwh.isna(), kwh < 0,
              kwh > max_kw * 24 / readings_per_day]  # fmt: skip
    reason = np.select([c.to_numpy(bool) for c in checks], list(REASONS[:5]), default="")
    out = pd.DataFrame({"timestamp": ts, "meter_id": meter, "kwh": kwh}, index=df.index)
    ok = reason == ""
    reason = reason.astype(object)
    reason[np.flatnonzero(ok)[out[ok].duplicated(keep="first").to_numpy()]] = "duplicate"
    return out.assign(reason=pd.Series(reason, index=df.index, dtype="str"))


def drop_flagged(df: pd.DataFrame) -> pd.DataFrame:
    """The rows :func:`flag_readings` kept, without the ``reason`` column."""
    return df[df["reason"] == ""].drop(columns="reason")


def reason_counts(flagged: pd.DataFrame) -> dict[str, int]:
    """Dropped rows by reason (every reason, zeros included)."""
    counts = flagged["reason"].value_counts()
    return {r: int(counts.get(r, 0)) for r in REASONS}


def clean(df: pd.DataFrame, meters: pd.DataFrame, **options: Any) -> tuple[pd.DataFrame, dict]:
    """``(kept rows, dropped rows by reason)`` in one go, in pandas."""
    flagged = flag_readings(df, meters, **options)
    return drop_flagged(flagged), reason_counts(flagged)


def join_meters(df: pd.DataFrame, meters: pd.DataFrame) -> pd.DataFrame:
    """The readings with their meter's ``region`` and ``tariff``."""
    table = meters.set_index("meter_id")
    return df.assign(
        region=df["meter_id"].map(table["region"]).astype("str"),
        tariff=df["meter_id"].map(table["tariff"]).astype("str"),
    )


def hourly_partial(df: pd.DataFrame) -> pd.DataFrame:
    """Phase one of the aggregation, per partition: ``date, region, tariff, hour, kwh,
    readings`` (kWh summed and readings counted by day, region, tariff and hour of day)."""
    parts = df.assign(
        date=df["timestamp"].dt.floor("D"), hour=df["timestamp"].dt.hour.astype("int64")
    )
    grouped = parts.groupby([*KEYS, "hour"], as_index=False, observed=True)
    return grouped.agg(kwh=("kwh", "sum"), readings=("kwh", "size"))


def daily_features(partials: pd.DataFrame, meters: pd.DataFrame | None = None) -> pd.DataFrame:
    """Phase two, on the (small) concatenated partials: ``date, region, tariff, kwh, readings,
    peak_hour, peak_hour_kwh`` and, given the meters, ``meters`` and ``kwh_per_meter``."""
    hourly = partials.groupby([*KEYS, "hour"], as_index=False)[["kwh", "readings"]].sum()
    daily = hourly.groupby(KEYS, as_index=False)[["kwh", "readings"]].sum()
    peak = hourly.loc[hourly.groupby(KEYS)["kwh"].idxmax(), [*KEYS, "hour", "kwh"]]
    out = daily.merge(peak.rename(columns={"hour": "peak_hour", "kwh": "peak_hour_kwh"}), on=KEYS)
    if meters is not None:
        per_group = meters.groupby(["region", "tariff"]).size().rename("meters").reset_index()
        out = out.merge(per_group, on=["region", "tariff"], how="left")
        out["kwh_per_meter"] = out["kwh"] / out["meters"]
    return out.sort_values(KEYS, ignore_index=True)


def write_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write one Parquet file (its folder created); its path."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    return path
