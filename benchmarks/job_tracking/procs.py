"""The job-tracking benchmark's view of the processes a hub starts.

``ProcEvents`` counts every fork exactly (the kernel's process-event connector, root
only); ``ProcSampler`` samples ``/proc`` every 20 ms, the method the brief asked for.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import threading
import time
from pathlib import Path

from benchmarks.job_tracking.stats import descendants

SAMPLE_EVERY_S = 0.02


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
                execed = self._live.get(tgid)
                if execed is not None:
                    execed[0] = self._comm(tgid) or "(exited before its name was read)"
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
