"""Small process helpers shared by the local Slurm and hub managers (Linux /proc based)."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

STATE_ROOT = Path(os.environ.get("FACTORYHUB_STATE_ROOT", "/var/lib/factoryhub"))
LOCAL_DIR = STATE_ROOT / "local"
STARTED_FILE = LOCAL_DIR / "started.json"


def read_pidfile(path: Path) -> int | None:
    """The pid written in ``path``, or None when the file is missing or garbled."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def proc_comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def proc_ppid(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("PPid:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return True


def alive(pid: int | None, comm: str | None = None, cmd_contains: str | None = None) -> bool:
    """True when ``pid`` runs (not a zombie) and, if given, matches ``comm`` / ``cmd_contains``."""
    if not pid or pid <= 0 or not Path(f"/proc/{pid}").exists() or is_zombie(pid):
        return False
    if comm is not None and proc_comm(pid) != comm:
        return False
    return cmd_contains is None or any(cmd_contains in part for part in proc_cmdline(pid))


def all_pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def find_by_comm(comm: str) -> list[int]:
    return sorted(pid for pid in all_pids() if proc_comm(pid) == comm and not is_zombie(pid))


def find_by_cmd(fragment: str, ppid: int | None = None) -> list[int]:
    found = []
    for pid in all_pids():
        if pid == os.getpid() or is_zombie(pid):
            continue
        if any(fragment in part for part in proc_cmdline(pid)):
            if ppid is None or proc_ppid(pid) == ppid:
                found.append(pid)
    return sorted(found)


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our own child (no zombie left behind)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not alive(pid):
            return True
        time.sleep(0.1)
    return not alive(pid)


def terminate(pid: int, timeout: float = 10.0, group: bool = False) -> None:
    """SIGTERM ``pid`` (or its process group), wait up to ``timeout`` s, then SIGKILL."""

    def send(sig: int) -> None:
        try:
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    if not alive(pid):
        return
    send(signal.SIGTERM)
    if wait_gone(pid, timeout):
        if group:
            send(signal.SIGKILL)  # stragglers left in the group
        return
    send(signal.SIGKILL)
    wait_gone(pid, 5.0)


def load_started() -> dict[str, int]:
    """What ``up`` started: name → pid."""
    try:
        data = json.loads(STARTED_FILE.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def private_dir(path: Path) -> Path:
    """``path`` (with its parents) made where missing, and mode 0700: the local factory's
    state is root's alone."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def write_private(path: Path, text: str) -> None:
    """``text`` into ``path`` (0600, in a 0700 folder) through a temporary file beside it."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.replace(path)


def open_private_log(path: Path) -> int:
    """A descriptor appending to the log ``path``, made (or made again) 0600 in a 0700 folder."""
    private_dir(path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def save_started(started: dict[str, int]) -> None:
    write_private(STARTED_FILE, json.dumps(started, indent=2, sort_keys=True) + "\n")


def record_started(name: str, pid: int) -> None:
    started = load_started()
    started[name] = pid
    save_started(started)


def forget_started(name: str) -> None:
    started = load_started()
    if started.pop(name, None) is not None:
        save_started(started)


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:])
