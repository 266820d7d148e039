"""Job tracking: stock batchspawner vs factoryhub, on one Slurm, side by side.

Run as root on a machine with the local Slurm up::

    /opt/factoryhub/venv/bin/python benchmarks/job_tracking.py [--servers N] [--minutes M]
        [--trials T] [--burst B] [--only load,detection,burst] [--json-out PATH]

One variant at a time (stock first, then factoryhub), each in a hub of its own on
loopback ports 28000+ (see ``benchmarks/processes.py``), with the same benchmark users
``fhtrack01..``. Three measurements:

- ``load``: N servers running, M minutes: slurmctld RPCs (``sdiag`` before/after) and the
  processes the hub starts (exact, from the kernel's process-event connector; also the
  20 ms ``/proc`` sampling the brief asked for, which misses most ~5 ms ``squeue`` runs).
- ``detection``: a server's job is cancelled behind the hub's back (``scancel`` as root):
  seconds until the hub has dropped the server *and* its proxy route.
- ``burst``: B users spawn at once while a reader does ``GET /hub/api/users`` every 100 ms:
  API latencies, error answers, whether (and when) every spawn became ready.

One JSON object goes to stdout (and to ``--json-out``); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import errno
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.processes import (
    PROFILE,
    PROXY_CMD,
    REPO,
    STOCK_CONFIG,
    Hub,
    cancel_jobs,
    ensure_unix_user,
    factoryhub_hub,
    stock_hub,
    versions,
)

VARIANT_ORDER = ("stock", "factoryhub")
PHASES = ("load", "detection", "burst")
USER_PREFIX = "fhtrack"
# factoryhub's jobs get their own name prefix here, so that the hubs of integration
# tests running beside the benchmark (job names "factoryhub-...") never list them.
JOB_NAME_PREFIX = "fhtrack"
# Both variants' jobs: 512 MB (stock gets DefMemPerCPU=512 without --mem) and shared
# CPUs, so that 20 servers fit the local node (16 CPUs, 16.8 GB) next to other jobs.
FACTORYHUB_EXTRA_SBATCH = ("--mem=512M", "--oversubscribe")
STOCK_REQ_OPTIONS = "--oversubscribe"

READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 180.0
SETTLE_S = 5.0  # after the last server is ready, before the load window opens
DETECTION_POLL_S = 0.05
DETECTION_CAP_S = 60.0
STOCK_MAX_TRIALS = 5
BURST_READ_EVERY_S = 0.1
SAMPLE_EVERY_S = 0.02
# Queries of the job table (squeue): all jobs, one job by id, one user's jobs.
JOB_INFO_TYPES = ("REQUEST_JOB_INFO", "REQUEST_JOB_INFO_SINGLE", "REQUEST_JOB_USER_INFO")
# sdiag's own RPC: the second snapshot counts itself.
SDIAG_TYPE = "REQUEST_STATS_INFO"


def log(message: str) -> None:
    print(f"[job_tracking {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------ statistics


def summarize(
    samples: Sequence[float], *, digits: int = 3, keep_samples: bool = True
) -> dict[str, Any]:
    """n, p50 (median), p95 (inclusive quantiles, n=20), min, max, mean (and the samples)."""
    if not samples:
        raise ValueError("no samples")
    data = [float(s) for s in samples]
    if len(data) == 1:
        p95 = data[0]
    else:
        p95 = statistics.quantiles(data, n=20, method="inclusive")[18]
    out: dict[str, Any] = {
        "n": len(data),
        "p50": round(statistics.median(data), digits),
        "p95": round(p95, digits),
        "min": round(min(data), digits),
        "max": round(max(data), digits),
        "mean": round(statistics.fmean(data), digits),
    }
    if keep_samples:
        out["samples"] = [round(s, digits) for s in data]
    return out


_RPC_LINE = re.compile(r"^\s*(\S+)\s*\(\s*(\d+)\)\s+count:(\d+)")
_STAMP = re.compile(r"^(sdiag output at|Data since)\s.*\((\d+)\)\s*$")


def parse_sdiag(text: str) -> dict[str, Any]:
    """RPC counts of ``sdiag`` output.

    ``{"at": epoch, "since": epoch, "by_type": {name: count}, "by_user": {user: count}}``:
    the counts are read from the sections "Remote Procedure Call statistics by message
    type" and "... by user"; ``at``/``since`` from the header ("sdiag output at",
    "Data since": slurmctld's statistics start at its start and at midnight), None if
    absent. Raises ValueError when the message-type section is missing.
    """
    out: dict[str, Any] = {"at": None, "since": None, "by_type": {}, "by_user": {}}
    current: str | None = None
    seen_types = False
    for line in text.splitlines():
        stamp = _STAMP.match(line)
        if stamp:
            out["at" if stamp.group(1).startswith("sdiag") else "since"] = int(stamp.group(2))
            continue
        if line.startswith("Remote Procedure Call statistics by message type"):
            current, seen_types = "by_type", True
            continue
        if line.startswith("Remote Procedure Call statistics by user"):
            current = "by_user"
            continue
        if not line.strip() or not line[0].isspace():
            current = None  # a blank line or a new heading ends a section
            continue
        if current is None:
            continue
        match = _RPC_LINE.match(line)
        if match:
            name, _code, count = match.groups()
            out[current][name] = out[current].get(name, 0) + int(count)
    if not seen_types:
        raise ValueError("no 'Remote Procedure Call statistics by message type' section")
    return out


def rpc_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Counts between two parsed sdiag snapshots, largest first.

    When slurmctld's statistics were reset in between (a new "Data since", or a counter
    that went down), the counts are those since the reset, ``reset`` is True and
    ``seconds_since_reset`` (when known) is the time they cover.
    """
    reset = before.get("since") != after.get("since")
    for section in ("by_type", "by_user"):
        for name, count in before.get(section, {}).items():
            if after.get(section, {}).get(name, 0) < count:
                reset = True
    out: dict[str, Any] = {"reset": reset}
    for section in ("by_type", "by_user"):
        old = {} if reset else before.get(section, {})
        diff = {n: c - old.get(n, 0) for n, c in after.get(section, {}).items()}
        diff = {n: d for n, d in diff.items() if d}
        out[section] = dict(sorted(diff.items(), key=lambda kv: (-kv[1], kv[0])))
    if reset and after.get("at") is not None and after.get("since") is not None:
        out["seconds_since_reset"] = after["at"] - after["since"]
    return out


def rpc_rates(delta: Mapping[str, Any], seconds: float, user_prefix: str) -> dict[str, Any]:
    """Per-minute rates of an RPC delta over ``seconds`` (after a reset: over the time
    since the reset); sdiag's own REQUEST_STATS_INFO is left out."""
    if delta.get("reset") and delta.get("seconds_since_reset"):
        seconds = float(delta["seconds_since_reset"])
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    per_min = 60.0 / seconds
    by_type: Mapping[str, int] = delta["by_type"]
    by_user: Mapping[str, int] = delta["by_user"]
    job_info_all = sum(by_type.get(t, 0) for t in JOB_INFO_TYPES)
    total = sum(n for t, n in by_type.items() if t != SDIAG_TYPE)
    bench_users = sum(n for u, n in by_user.items() if u.startswith(user_prefix))
    return {
        "seconds": round(seconds, 1),
        "request_job_info_per_minute": round(by_type.get("REQUEST_JOB_INFO", 0) * per_min, 1),
        "job_info_rpcs_per_minute": round(job_info_all * per_min, 1),
        "all_rpcs_per_minute": round(total * per_min, 1),
        "rpcs_by_benchmark_users_per_minute": round(bench_users * per_min, 1),
        "by_type_per_minute": {
            t: round(n * per_min, 1) for t, n in by_type.items() if t != SDIAG_TYPE
        },
        "reset_in_window": bool(delta.get("reset")),
    }


def net_of(raw: Mapping[str, Any], background: Mapping[str, Any] | None, key: str) -> float | None:
    """``raw[key]`` minus the background rate (never below 0); None without a background."""
    if background is None or key not in raw or key not in background:
        return None
    return round(max(0.0, raw[key] - background[key]), 1)


def process_rates(names: Sequence[str], seconds: float) -> dict[str, Any]:
    """Processes per minute, in total and by command name (most frequent first)."""
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    per_min = 60.0 / seconds
    counts = Counter(names)
    return {
        "count": len(names),
        "per_minute": round(len(names) * per_min, 1),
        "by_name_per_minute": {
            name: round(n * per_min, 1)
            for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        },
    }


def detection_targets(summary: Mapping[str, Any] | None, limit_s: float) -> bool | None:
    if not summary or "p95" not in summary:
        return None
    return bool(summary["p95"] <= limit_s)


# ------------------------------------------------------------------------ processes


def proc_table() -> dict[int, tuple[int, str, int]]:
    """pid → (ppid, comm, start time in clock ticks) of every process now."""
    table: dict[int, tuple[int, str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses
        left, right = raw.find(b"("), raw.rfind(b")")
        comm = raw[left + 1 : right].decode(errors="replace")
        fields = raw[right + 2 :].split()
        with contextlib.suppress(IndexError, ValueError):
            table[int(entry)] = (int(fields[1]), comm, int(fields[19]))
    return table


def descendants(table: Mapping[int, tuple[int, str, int]], root: int) -> set[int]:
    """Processes of ``table`` whose parent chain leads to ``root`` (root included)."""
    found = {root}
    memo: dict[int, bool] = {root: True}
    for pid in table:
        chain = []
        cur = pid
        verdict = False
        while True:
            if cur in memo:
                verdict = memo[cur]
                break
            entry = table.get(cur)
            if entry is None or cur <= 1:
                break
            chain.append(cur)
            cur = entry[0]
        for p in chain:
            memo[p] = verdict
        if verdict:
            found.add(pid)
    return found


class ProcSampler:
    """The brief's method: every 20 ms, the hub's descendants in /proc (distinct pids
    first seen after the start; a process living ~5 ms is caught ~1 time in 4)."""

    def __init__(self, root: int, every: float = SAMPLE_EVERY_S) -> None:
        self.root, self.every = root, every
        self._stop = threading.Event()
        self._initial: set[tuple[int, int]] = set()
        self.seen: dict[tuple[int, int], str] = {}
        self.samples = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        table = proc_table()
        self._initial = {(p, table[p][2]) for p in descendants(table, self.root) if p in table}
        self._thread.start()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            table = proc_table()
            for pid in descendants(table, self.root):
                entry = table.get(pid)
                if entry is not None and (pid, entry[2]) not in self._initial:
                    self.seen[(pid, entry[2])] = entry[1]  # the last name seen (after exec)
            self.samples += 1
            next_at += self.every
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10)
        return list(self.seen.values())


class ProcEvents:
    """Exact count of the processes a hub forks, from the kernel's process-event connector
    (netlink, root only): every fork whose parent is the hub or one of its descendants,
    named by the command it exec'd (``/proc/PID/comm`` read at the exec event)."""

    NETLINK_CONNECTOR, CN_IDX_PROC, CN_VAL_PROC = 11, 1, 1
    PROC_EVENT_FORK, PROC_EVENT_EXEC, PROC_EVENT_EXIT = 0x1, 0x2, 0x80000000
    DATA_OFFSET = 16 + 20 + 16  # nlmsghdr + cn_msg + proc_event header (what, cpu, ts)

    def __init__(self, root: int) -> None:
        self.root = root
        self.tracked: set[int] = set()
        self.records: list[list[str]] = []  # [name] per new process, updated on exec
        self._live: dict[int, list[str]] = {}
        self.lost_batches = 0
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, self.NETLINK_CONNECTOR)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
        sock.bind((0, self.CN_IDX_PROC))
        op = struct.pack("=I", 1)  # PROC_CN_MCAST_LISTEN
        cn = struct.pack("=IIIIHH", self.CN_IDX_PROC, self.CN_VAL_PROC, 0, 0, len(op), 0) + op
        sock.send(struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn)  # NLMSG_DONE
        sock.settimeout(0.2)
        self._sock = sock
        self.tracked = descendants(proc_table(), self.root)
        self._thread.start()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self.lost_batches += 1
                    continue
                raise
            if len(data) < self.DATA_OFFSET:
                continue
            (what,) = struct.unpack_from("=I", data, 36)
            if what == self.PROC_EVENT_FORK:
                _ppid, ptgid, cpid, ctgid = struct.unpack_from("=IIII", data, self.DATA_OFFSET)
                if cpid == ctgid and ptgid in self.tracked:  # a process, not a thread
                    self.tracked.add(cpid)
                    record = [self._comm(cpid) or "?"]
                    self.records.append(record)
                    self._live[cpid] = record
            elif what == self.PROC_EVENT_EXEC:
                _pid, tgid = struct.unpack_from("=II", data, self.DATA_OFFSET)
                record = self._live.get(tgid)
                if record is not None:
                    record[0] = self._comm(tgid) or "(exited before its name was read)"
            elif what == self.PROC_EVENT_EXIT:
                pid, tgid = struct.unpack_from("=II", data, self.DATA_OFFSET)
                if pid == tgid and pid != self.root:
                    self.tracked.discard(pid)
                    self._live.pop(pid, None)

    @staticmethod
    def _comm(pid: int) -> str | None:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return None

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(10)
        if self._sock is not None:
            self._sock.close()
        return [r[0] for r in self.records]


# ------------------------------------------------------------------------ Slurm


def slurm_output(argv: Sequence[str], patience: float = 90.0) -> str:
    """stdout of a Slurm command; retried while slurmctld does not answer (restarts)."""
    deadline = time.monotonic() + patience
    while True:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
        if result.returncode == 0:
            return result.stdout
        if time.monotonic() > deadline:
            raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
        time.sleep(1.0)


def sdiag() -> dict[str, Any]:
    return parse_sdiag(slurm_output(["sdiag"]))


def slurmctld_instances() -> frozenset[tuple[int, int]]:
    """(pid, start time) of the slurmctld processes: a change means it was restarted."""
    return frozenset((pid, e[2]) for pid, e in proc_table().items() if e[1] == "slurmctld")


def jobs_of(users: Sequence[str]) -> list[tuple[str, str]]:
    """(job id, user) of the users' active jobs."""
    out = slurm_output(["squeue", "--noheader", f"--user={','.join(users)}", "--format=%i %u"])
    pairs = [line.split() for line in out.splitlines() if line.strip()]
    return [(p[0], p[1]) for p in pairs if len(p) == 2]


def wait_no_jobs(users: Sequence[str], timeout: float = STOP_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while jobs := jobs_of(users):
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs still there after {timeout} s: {jobs}")
        time.sleep(0.3)


# ------------------------------------------------------------------------ hubs


def make_hub(variant: str, state: Path, token_file: Path, token: str) -> tuple[Hub, float]:
    """The variant's hub, with a wrapper config (see module constants); its poll interval."""
    state.mkdir(mode=0o700)
    if variant == "stock":
        from jupyterhub.spawner import Spawner

        hub = stock_hub(state, token_file, token)
        wrapper = state / "job_tracking_config.py"
        wrapper.write_text(
            "c = get_config()  # noqa: F821\n"
            f"load_subconfig({str(STOCK_CONFIG)!r})  # noqa: F821\n"
            "# GET /hub/api/proxy needs the proxy scope\n"
            "c.JupyterHub.load_roles = [\n"
            "    dict(r, scopes=[*r['scopes'], 'proxy']) for r in c.JupyterHub.load_roles\n"
            "]\n"
            f"c.BatchSpawnerBase.req_options = {STOCK_REQ_OPTIONS!r}\n"
        )
        hub.config_file = wrapper
        return hub, float(Spawner.poll_interval.default_value)

    import yaml

    hub = factoryhub_hub(state, token_file, token)
    site_file = Path(hub.env["FACTORYHUB_SITE_FILE"])
    site = yaml.safe_load(site_file.read_text())
    site["slurm"]["job_name_prefix"] = JOB_NAME_PREFIX
    # No projects: every user may use every profile, under their default Slurm account
    # (the benchmark users are in no project's group).
    site["projects"] = []
    site_file.write_text(yaml.safe_dump(site))
    wrapper = state / "job_tracking_config.py"
    wrapper.write_text(
        "c = get_config()  # noqa: F821\n"
        f"load_subconfig({str(hub.config_file)!r})  # noqa: F821\n"
        f"c.FactorySlurmSpawner.extra_sbatch_options = {list(FACTORYHUB_EXTRA_SBATCH)!r}\n"
    )
    hub.config_file = wrapper
    return hub, float(site["slurm"]["poll_interval"])


def server_state(model: Mapping[str, Any]) -> str:
    """'ready', 'pending' or 'none' for the user's default server."""
    server = (model.get("servers") or {}).get("")
    if server is None:
        return "pending" if model.get("pending") else "none"
    return "ready" if server.get("ready") else "pending"


def user_models(client: Any) -> dict[str, dict[str, Any]]:
    r = client.get("/hub/api/users", params={"limit": 200})
    r.raise_for_status()
    return {m["name"]: m for m in r.json()}


def spawn(hub: Hub, user: str, options: Mapping[str, Any]) -> None:
    with hub.client(timeout=60) as c:
        r = c.post(f"/hub/api/users/{user}/server", json=dict(options))
    if r.status_code not in (201, 202):
        raise RuntimeError(f"{hub.name}: spawn of {user}: {r.status_code} {r.text[:300]}")


def spawn_all(hub: Hub, users: Sequence[str], options: Mapping[str, Any]) -> tuple[float, int]:
    """Spawn every user's server at once; seconds until all are ready, and how many spawns
    failed and were tried once more (a slurmctld restart by someone else, say)."""
    start = time.perf_counter()
    todo, retried = list(users), 0
    for attempt in range(2):
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            errors = [f.exception() for f in [pool.submit(spawn, hub, u, options) for u in todo]]
        try:
            wait_states(hub, users, "ready", READY_TIMEOUT_S)
            return time.perf_counter() - start, retried
        except SpawnFailed as e:
            if attempt:
                raise
            todo = e.users
            retried = len(todo)
            log(f"{hub.name}: {retried} spawns failed ({[str(x) for x in errors if x]}); retrying")
            stop_all(hub, todo)
    raise AssertionError("unreachable")


class SpawnFailed(RuntimeError):
    def __init__(self, message: str, users: list[str]) -> None:
        super().__init__(message)
        self.users = users


def wait_states(hub: Hub, users: Sequence[str], want: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with hub.client() as c:
        while True:
            models = user_models(c)
            states = {u: server_state(models.get(u, {})) for u in users}
            if want == "ready" and any(s == "none" for s in states.values()):
                gone = [u for u, s in states.items() if s == "none"]
                raise SpawnFailed(f"{hub.name}: spawn failed for {gone}:\n{hub.log_tail()}", gone)
            if all(s == want for s in states.values()):
                return
            if time.monotonic() > deadline:
                late = {u: s for u, s in states.items() if s != want}
                raise RuntimeError(f"{hub.name}: not {want} in {timeout} s: {late}")
            time.sleep(0.5)


def stop_all(hub: Hub, users: Sequence[str], timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop every server of ``users``; wait until the hub shows none and Slurm has no job."""
    with hub.client(timeout=60) as c:
        models = user_models(c)
        running = [u for u in users if server_state(models.get(u, {})) != "none"]

        def delete(user: str) -> None:
            r = c.delete(f"/hub/api/users/{user}/server")
            if r.status_code not in (202, 204, 400):
                raise RuntimeError(f"{hub.name}: stop of {user}: {r.status_code} {r.text}")

        with ThreadPoolExecutor(max_workers=max(1, min(8, len(running)))) as pool:
            for f in [pool.submit(delete, u) for u in running]:
                f.result()
    wait_states(hub, users, "none", timeout)
    wait_no_jobs(users, timeout)


# ------------------------------------------------------------------------ phases


def measure_background(seconds: float) -> dict[str, Any]:
    """slurmctld's RPC rates with no benchmark hub running (other users of the cluster)."""
    before = sdiag()
    time.sleep(seconds)
    after = sdiag()
    return rpc_rates(rpc_delta(before, after), seconds, USER_PREFIX)


def phase_load(
    hub: Hub,
    users: Sequence[str],
    options: Mapping[str, Any],
    minutes: float,
    background: Mapping[str, Any] | None,
) -> dict[str, Any]:
    log(f"{hub.name} load: spawning {len(users)} servers")
    ready_s, retried = spawn_all(hub, users, options)
    log(f"{hub.name} load: all {len(users)} ready in {ready_s:.1f} s; settling {SETTLE_S} s")
    time.sleep(SETTLE_S)
    assert hub.proc is not None
    events: ProcEvents | None = ProcEvents(hub.proc.pid)
    events_error = None
    try:
        events.start()
    except OSError as e:
        events, events_error = None, f"process-event connector unavailable: {e}"
        log(events_error)
    sampler = ProcSampler(hub.proc.pid)
    sampler.start()
    ctld = slurmctld_instances()
    before = sdiag()
    start = time.monotonic()
    window = minutes * 60.0
    while (left := start + window - time.monotonic()) > 0:
        time.sleep(min(60.0, left))
        log(f"{hub.name} load: {(time.monotonic() - start) / 60:.1f}/{minutes} min")
    after = sdiag()
    seconds = time.monotonic() - start
    ctld_restarted = slurmctld_instances() != ctld
    sampled = sampler.stop()
    exact = events.stop() if events is not None else None
    with hub.client() as c:
        models = user_models(c)
    still_ready = sum(server_state(models.get(u, {})) == "ready" for u in users)
    delta = rpc_delta(before, after)
    rates = rpc_rates(delta, seconds, USER_PREFIX)
    procs = process_rates(exact if exact is not None else sampled, seconds)
    sampled_rates = process_rates(sampled, seconds)
    result: dict[str, Any] = {
        "servers": len(users),
        "servers_ready_at_end": still_ready,
        "spawn_all_ready_s": round(ready_s, 1),
        "spawns_retried": retried,
        "slurmctld_restarted_in_window": ctld_restarted,
        "window_s": round(seconds, 1),
        **rates,
        "job_info_rpcs_per_minute_net_of_background": net_of(
            rates, background, "job_info_rpcs_per_minute"
        ),
        "all_rpcs_per_minute_net_of_background": net_of(rates, background, "all_rpcs_per_minute"),
        "hub_processes_per_minute": procs["per_minute"],
        "hub_processes_by_name_per_minute": procs["by_name_per_minute"],
        # Each squeue the hub runs is one job-table query (REQUEST_JOB_INFO for
        # factoryhub's, REQUEST_JOB_INFO_SINGLE for stock's `squeue -j`): the hub's own
        # share of the job-info RPCs, free of other clients of the controller.
        "hub_squeue_per_minute": procs["by_name_per_minute"].get("squeue", 0.0),
        "hub_processes_method": (
            "process-event connector (every fork)" if exact is not None else "20 ms /proc sampling"
        ),
        "hub_processes_sampled_20ms": {
            "per_minute": sampled_rates["per_minute"],
            "by_name_per_minute": sampled_rates["by_name_per_minute"],
            "samples": sampler.samples,
        },
        "rpc_delta": delta,
    }
    if events is not None and events.lost_batches:
        result["process_events_lost_batches"] = events.lost_batches
    if events_error:
        result["process_events_error"] = events_error
    log(
        f"{hub.name} load: job-info RPCs {rates['job_info_rpcs_per_minute']}/min, "
        f"all {rates['all_rpcs_per_minute']}/min, hub processes {procs['per_minute']}/min "
        f"{procs['by_name_per_minute']}"
    )
    log(f"{hub.name} load: stopping {len(users)} servers")
    stop_all(hub, users)
    return result


def detection_trial(hub: Hub, user: str, options: Mapping[str, Any]) -> tuple[float, str]:
    """Spawn, wait ready (and routed), scancel the job as root: seconds until the hub has
    dropped both the server and its route (DETECTION_CAP_S if it has not by then)."""
    spawn(hub, user, options)
    wait_states(hub, [user], "ready", READY_TIMEOUT_S)
    route = f"/user/{user}/"
    with hub.client(timeout=10) as c:
        deadline = time.monotonic() + 30
        while not any(k.endswith(route) for k in c.get("/hub/api/proxy").json()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{hub.name}: no route {route} for a ready server")
            time.sleep(0.1)
        jobs = [j for j, u in jobs_of([user]) if u == user]
        if len(jobs) != 1:
            raise RuntimeError(f"{hub.name}: expected one job of {user}, found {jobs}")
        start = time.perf_counter()
        subprocess.run(["scancel", jobs[0]], check=True, timeout=30)
        while True:
            if server_state(c.get(f"/hub/api/users/{user}").json()) == "none":
                routes = c.get("/hub/api/proxy").json()
                if not any(k.endswith(route) for k in routes):
                    return time.perf_counter() - start, jobs[0]
            if time.perf_counter() - start >= DETECTION_CAP_S:
                return DETECTION_CAP_S, jobs[0]
            time.sleep(DETECTION_POLL_S)


def phase_detection(
    hub: Hub, users: Sequence[str], options: Mapping[str, Any], trials: int
) -> dict[str, Any]:
    samples: list[float] = []
    quiet: list[float] = []  # trials during which slurmctld was not restarted
    disturbed: list[int] = []
    errors: list[str] = []
    for i in range(trials):
        user = users[i % len(users)]
        ctld = slurmctld_instances()
        try:
            elapsed, job = detection_trial(hub, user, options)
        except Exception as e:
            errors.append(f"trial {i + 1} ({user}): {e}"[:500])
            log(f"{hub.name} detection {i + 1}/{trials} FAILED: {e}")
        else:
            samples.append(elapsed)
            restarted = slurmctld_instances() != ctld
            if restarted:
                disturbed.append(i + 1)
            else:
                quiet.append(elapsed)
            note = " (slurmctld restarted meanwhile)" if restarted else ""
            log(f"{hub.name} detection {i + 1}/{trials}: {elapsed:.3f} s ({user}, job {job}){note}")
        with contextlib.suppress(Exception):
            stop_all(hub, [user])  # a no-op unless the hub missed it or the trial failed
    if not samples:
        raise RuntimeError(f"every detection trial failed: {errors}")
    return {
        "trials": trials,
        "timeouts": sum(1 for x in samples if x >= DETECTION_CAP_S),
        "cap_s": DETECTION_CAP_S,
        **summarize(samples),
        "failed_trials": errors,
        "trials_with_slurmctld_restart": disturbed,
        "without_slurmctld_restart": summarize(quiet) if quiet and disturbed else None,
    }


def phase_burst(hub: Hub, users: Sequence[str], options: Mapping[str, Any]) -> dict[str, Any]:
    import httpx

    reads: list[float] = []
    read_codes: Counter[int] = Counter()
    read_errors: list[str] = []
    post_latency: dict[str, float] = {}
    post_codes: dict[str, int | str] = {}
    ready_at: dict[str, float] = {}
    failed: set[str] = set()
    posted: set[str] = set()
    done = threading.Event()
    start_box: list[float] = []  # set by the barrier as it releases everyone at once
    barrier = threading.Barrier(
        len(users) + 1, action=lambda: start_box.append(time.perf_counter())
    )

    def spawner(user: str) -> None:
        with hub.client(timeout=120) as c:
            barrier.wait()
            t = time.perf_counter()
            try:
                r = c.post(f"/hub/api/users/{user}/server", json=dict(options))
                post_codes[user] = r.status_code
            except httpx.HTTPError as e:
                post_codes[user] = f"error: {e!r}"
            post_latency[user] = time.perf_counter() - t
            if post_codes[user] in (201, 202):
                posted.add(user)
            else:
                failed.add(user)

    def reader() -> None:
        with hub.client(timeout=30) as c:
            barrier.wait()
            next_at = time.perf_counter()
            while not done.is_set():
                t = time.perf_counter()
                try:
                    r = c.get("/hub/api/users", params={"limit": 200})
                except httpx.HTTPError as e:
                    read_errors.append(repr(e))
                    r = None
                took = time.perf_counter() - t
                reads.append(took)
                if r is not None:
                    read_codes[r.status_code] += 1
                    if r.status_code == 200:
                        models = {m["name"]: m for m in r.json()}
                        for u in users:
                            state = server_state(models.get(u, {}))
                            if state == "ready" and u not in ready_at:
                                ready_at[u] = time.perf_counter() - start_box[0]
                            elif state == "none" and u in posted and u not in ready_at:
                                failed.add(u)
                if set(ready_at) | failed >= set(users):
                    done.set()
                if time.perf_counter() - start_box[0] > READY_TIMEOUT_S:
                    done.set()
                next_at += BURST_READ_EVERY_S
                done.wait(max(0.0, next_at - time.perf_counter()))

    threads = [threading.Thread(target=spawner, args=(u,), daemon=True) for u in users]
    threads.append(threading.Thread(target=reader, daemon=True))
    ctld = slurmctld_instances()
    log(f"{hub.name} burst: {len(users)} spawns at once")
    for t in threads:
        t.start()
    for t in threads:
        t.join(READY_TIMEOUT_S + 60)
    done.set()
    if not start_box:
        raise RuntimeError(f"{hub.name} burst: the threads never started together")
    wall = time.perf_counter() - start_box[0]
    not_ready = sorted(set(users) - set(ready_at))
    all_codes = Counter(read_codes)
    all_codes.update(c for c in post_codes.values() if isinstance(c, int))
    result: dict[str, Any] = {
        "spawns": len(users),
        "all_ready": not not_ready,
        "ready": len(ready_at),
        "not_ready": not_ready,
        "all_ready_s": round(max(ready_at.values()), 2) if not not_ready else None,
        "first_ready_s": round(min(ready_at.values()), 2) if ready_at else None,
        "window_s": round(wall, 1),
        "slurmctld_restarted_in_window": slurmctld_instances() != ctld,
        "reads": len(reads),
        "read_latency_ms": summarize([x * 1000 for x in reads], digits=1, keep_samples=False),
        "spawn_post_latency_ms": summarize(
            [x * 1000 for x in post_latency.values()], digits=1, keep_samples=False
        ),
        "status_codes": {str(k): v for k, v in sorted(all_codes.items())},
        "non_2xx": sum(v for k, v in all_codes.items() if not 200 <= k < 300),
        "5xx": sum(v for k, v in all_codes.items() if k >= 500),
        "request_errors": len(read_errors)
        + sum(1 for c in post_codes.values() if isinstance(c, str)),
    }
    log(
        f"{hub.name} burst: ready {len(ready_at)}/{len(users)} "
        f"(all in {result['all_ready_s']} s), reads p95 {result['read_latency_ms']['p95']} ms, "
        f"codes {result['status_codes']}"
    )
    log(f"{hub.name} burst: stopping servers")
    stop_all(hub, users)
    return result


# ------------------------------------------------------------------------ driver


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--servers", type=int, default=20, help="servers for the load window")
    parser.add_argument("--minutes", type=float, default=5.0, help="length of the load window")
    parser.add_argument("--trials", type=int, default=20, help="dead-server detection trials")
    parser.add_argument("--burst", type=int, default=20, help="users spawning at once")
    parser.add_argument("--only", default=",".join(PHASES), help="subset of load,detection,burst")
    parser.add_argument(
        "--variants", default=",".join(VARIANT_ORDER), help="subset of stock,factoryhub"
    )
    parser.add_argument(
        "--background-seconds",
        type=float,
        default=30.0,
        help="RPC background window before each variant's hub starts (0: none)",
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON result here")
    parser.add_argument("--keep-state", action="store_true", help="keep hub logs and databases")
    args = parser.parse_args(argv)
    for name, allowed in (("only", PHASES), ("variants", VARIANT_ORDER)):
        picked = [p.strip() for p in getattr(args, name).split(",") if p.strip()]
        unknown = sorted(set(picked) - set(allowed))
        if unknown or not picked:
            parser.error(f"--{name}: unknown or empty: {unknown or picked}")
        setattr(args, name, [p for p in allowed if p in picked])
    for name in ("servers", "trials", "burst"):
        if not 1 <= getattr(args, name) <= 99:
            parser.error(f"--{name} must be within 1..99")
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    n_users = max(
        args.servers if "load" in args.only else 1,
        args.burst if "burst" in args.only else 1,
        args.trials if "detection" in args.only else 1,
    )
    users = [f"{USER_PREFIX}{i:02d}" for i in range(1, n_users + 1)]
    for user in users:
        ensure_unix_user(user)
        cancel_jobs(user)
    wait_no_jobs(users)

    state = Path(tempfile.mkdtemp(prefix="fhtrack-"))
    state.chmod(0o700)
    log(f"state and logs in {state}")
    token = secrets.token_hex(32)
    token_file = state / "admin-api-token"
    token_file.write_text(token)
    token_file.chmod(0o600)

    out: dict[str, Any] = {phase: {} for phase in args.only}
    backgrounds: dict[str, Any] = {}
    intervals: dict[str, float] = {}
    trials_run: dict[str, int] = {}
    failed = False
    try:
        for variant in args.variants:
            background = None
            if "load" in args.only and args.background_seconds > 0:
                log(f"background RPCs for {args.background_seconds:.0f} s (no benchmark hub)")
                background = backgrounds[variant] = measure_background(args.background_seconds)
                log(f"background: {background['all_rpcs_per_minute']} RPCs/min")
            hub, intervals[variant] = make_hub(variant, state / variant, token_file, token)
            options = {"profile": PROFILE} if variant == "factoryhub" else {}
            try:
                hub.start()
                for user in users:
                    hub.ensure_user(user)
                for phase in args.only:
                    try:
                        if phase == "load":
                            result = phase_load(
                                hub, users[: args.servers], options, args.minutes, background
                            )
                            result["poll_interval_s"] = intervals[variant]
                        elif phase == "detection":
                            trials = args.trials
                            if variant == "stock":
                                trials = min(args.trials, STOCK_MAX_TRIALS)
                            trials_run[variant] = trials
                            result = phase_detection(hub, users, options, trials)
                        else:
                            result = phase_burst(hub, users[: args.burst], options)
                    except Exception as e:
                        failed = True
                        log(f"{variant} {phase} FAILED: {e}\n{traceback.format_exc()}")
                        result = {"error": str(e)[:2000]}
                        with contextlib.suppress(Exception):
                            stop_all(hub, users, timeout=120)
                    out[phase][variant] = result
            finally:
                with contextlib.suppress(Exception):
                    stop_all(hub, users, timeout=60)
                hub.stop()
                for user in users:
                    cancel_jobs(user)
    finally:
        for user in users:
            cancel_jobs(user)
        if failed or args.keep_state:
            log(f"kept {state}")
        else:
            shutil.rmtree(state, ignore_errors=True)

    return {
        **out,
        "targets": targets(out, intervals, args),
        "metadata": {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "host": socket.gethostname(),
            "nproc": os.cpu_count(),
            "git_head": git_head(),
            "servers": args.servers,
            "minutes": args.minutes,
            "trials_requested": args.trials,
            "trials_run": trials_run,
            "trials_note": (
                f"stock gets min(trials, {STOCK_MAX_TRIALS}): each of its trials may wait up "
                f"to its {intervals.get('stock', 30):.0f} s poll interval"
            ),
            "burst": args.burst,
            "poll_interval_s": intervals,
            "background_rpcs_no_hub": backgrounds,
            "users": f"{users[0]}..{users[-1]}",
            "order": "variant by variant: " + ", ".join(args.variants),
            "factoryhub_profile": PROFILE,
            "factoryhub_extra_sbatch": list(FACTORYHUB_EXTRA_SBATCH),
            "factoryhub_job_name_prefix": JOB_NAME_PREFIX,
            "stock_req_options": STOCK_REQ_OPTIONS,
            "versions": versions(),
        },
    }


def targets(out: Mapping[str, Any], intervals: Mapping[str, float], args: Any) -> dict[str, Any]:
    t: dict[str, Any] = {}
    load = out.get("load", {})
    fh = load.get("factoryhub", {})
    if "hub_squeue_per_minute" in fh:
        limit = 60.0 / intervals["factoryhub"]
        t["factoryhub_job_info_queries_per_minute_limit"] = limit
        t["factoryhub_hub_squeue_le_1_per_interval"] = fh["hub_squeue_per_minute"] <= limit
        net = fh.get("job_info_rpcs_per_minute_net_of_background")
        t["factoryhub_job_info_rpcs_net_le_1_per_interval"] = None if net is None else net <= limit
    stock = load.get("stock", {})
    if "hub_squeue_per_minute" in stock:
        t["stock_expected_job_info_per_minute"] = round(
            stock["servers"] * 60.0 / intervals["stock"], 1
        )
    det = out.get("detection", {})
    t["factoryhub_detection_p95_le_2s"] = detection_targets(det.get("factoryhub"), 2.0)
    for variant, b in out.get("burst", {}).items():
        if "read_latency_ms" in b:
            t[f"{variant}_burst_no_5xx"] = b["5xx"] == 0 and b["request_errors"] == 0
            t[f"{variant}_burst_read_p95_le_250ms"] = b["read_latency_ms"]["p95"] <= 250
            t[f"{variant}_burst_all_ready"] = b["all_ready"]
    return t


def git_head() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("job_tracking: run as root (jobs start as benchmark users)", file=sys.stderr)
        return 2
    if not PROXY_CMD.exists():
        print(f"job_tracking: {PROXY_CMD} is missing (npm ci)", file=sys.stderr)
        return 2
    with sigterm_as_interrupt():
        result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
