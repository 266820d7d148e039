"""The "rest" Slurm access mode: slurmrestd over HTTP with a short-lived JWT per user.

The hub is then no Slurm submit host: it needs neither ``sudo``/``runuser`` nor munge, only
HTTP to slurmrestd and the cluster's HS256 key (``factoryhub.spawners.slurm.tokens``). Every
call that acts for a user (submit, cancel) carries a token minted for that user, so Slurm runs
and checks it as that user exactly as ``sbatch`` would. Queries (the shared poller's one
request per tick, accounting, nodes, reservations) carry a token of ``query_user``.

:class:`RestSlurmClient` is a :class:`~.client.SlurmClient` like the local one and keeps
its two failures apart: :class:`SlurmUnavailable` (slurmrestd or slurmctld did not answer:
nothing is known) and :class:`SlurmError` (Slurm answered and refused; the message is Slurm's).
"""

from __future__ import annotations

import base64
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import httpx

from factoryhub.spawners.model.users import POSIX_NAME, fill_user_template
from factoryhub.spawners.slurm.client import (
    JobInfo,
    SlurmError,
    SlurmUnavailable,
    SlurmUser,
    by_id,
    named,
)
from factoryhub.spawners.slurm.job_json import (
    UNAVAILABLE,
    accounted_state,
    error_text,
    errors_of,
    job_info,
    jobs_of,
    listed,
    node_view,
    reservation_jobs,
    reservation_view,
)
from factoryhub.spawners.slurm.sbatch_options import UnsupportedOption, job_properties
from factoryhub.spawners.slurm.tokens import JwtKeyError, TokenCache

__all__ = ["DEFAULT_PATH", "RestSlurmClient", "job_info", "prologue", "user_record"]

_INVALID_JOB = "Invalid job id"
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


def prologue(dirs: Sequence[str], files: Mapping[str, str], output: str) -> str:
    """Shell lines that make ``dirs`` (0700) and ``files`` (0600) as the job's user, then send
    the job's output to ``output`` (``%j``: the job id): over REST nobody can make them
    before the job runs, and Slurm opens ``--output`` before the script starts."""
    lines = ["# factoryhub (rest access mode): what the hub cannot prepare itself"]
    for d in dirs:
        q = shlex.quote(d)
        lines.append(f"mkdir -p -m 0700 -- {q} && chmod 0700 -- {q} || exit 1")
    for path, text in files.items():
        data = base64.b64encode(text.encode()).decode()
        lines.append(
            f"(umask 077 && printf '%s' {data} | base64 -d > {shlex.quote(path)}) || exit 1"
        )
    if output:
        head, mark, tail = output.partition("%j")
        target = shlex.quote(head) + ('"$SLURM_JOB_ID"' + shlex.quote(tail) if mark else "")
        lines.append(f"exec >>{target} 2>&1")
    return "\n".join(lines) + "\n"


def user_record(data: Mapping[str, Any], username: str, home: str) -> SlurmUser | None:
    """``username`` from slurmrestd's answer to ``/slurmdb/v0.0.38/user/<name>`` (sans-IO);
    None when the answer holds no live record of them. A record's ``uid`` is read where
    Slurm gives one; 22.05's records have none."""
    for record in listed(data, "users", "the user lookup"):
        if record.get("name") != username or "DELETED" in (record.get("flags") or []):
            continue
        associations = record.get("associations") or []
        accounts = frozenset(
            a["account"]
            for a in associations
            if isinstance(a, Mapping)
            and a.get("user") == username
            and isinstance(a.get("account"), str)
            and a["account"]
        )
        default = record.get("default")
        default_account = default.get("account") if isinstance(default, Mapping) else ""
        uid = record.get("uid")
        return SlurmUser(
            name=username,
            home=home,
            accounts=accounts,
            default_account=default_account if isinstance(default_account, str) else "",
            uid=uid if isinstance(uid, int) and not isinstance(uid, bool) else None,
        )
    return None


def _raise_errors(data: Mapping[str, Any], what: str) -> None:
    """SlurmUnavailable or SlurmError for the errors in slurmrestd's answer (slurmdbd's
    "Nothing found" is none)."""
    errors = errors_of(data)
    if not errors:
        return
    message = error_text(errors).strip()
    unspecified = all(e.get("error_number") == -1 for e in errors)
    if UNAVAILABLE.search(message) or unspecified:
        # slurmctld down, or slurmctld dropping a token made with another key: the two look
        # alike from here (slurmctld's log tells them apart).
        raise SlurmUnavailable(
            f"Slurm did not answer ({what}): {message}. If slurmctld is up, the "
            "hub's JWT key (slurm.rest.key_file) is probably not the cluster's "
            "(slurm.conf AuthAltParameters=jwt_key)"
        )
    raise SlurmError(f"Slurm refused {what}: {message}")


def _under(path: str, dirs: Sequence[str]) -> bool:
    parent = PurePosixPath(path).parent
    return any(parent == PurePosixPath(d) or PurePosixPath(d) in parent.parents for d in dirs)


class RestSlurmClient:
    """sbatch/squeue/scancel/sacct/scontrol show, spoken to slurmrestd."""

    def __init__(
        self,
        url: str,
        key_file: str,
        api_version: str = "v0.0.38",
        token_lifetime: int = 600,
        home: str = "/home/{username}",
        query_user: str = "root",
        timeout: float = 30.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.api_version = api_version
        self.tokens = TokenCache(key_file, token_lifetime)
        self.home_template = home
        self.query_user = query_user
        self.timeout = timeout
        self._http: httpx.AsyncClient | None = None

    # ------------------------------------------------------------------ HTTP

    def _client(self) -> httpx.AsyncClient:
        if self._http is None or self._http.is_closed:
            self._http = httpx.AsyncClient(base_url=self.url, timeout=self.timeout)
        return self._http

    async def _call(
        self,
        method: str,
        path: str,
        user: str,
        what: str,
        body: Any = None,
        nothing_found_ok: bool = False,
    ) -> dict[str, Any]:
        """One request as ``user``; its JSON, or SlurmUnavailable / SlurmError.
        ``nothing_found_ok``: slurmdbd's "Nothing found" (HTTP 500) is an empty answer."""
        try:
            token = self.tokens.token(user)
        except JwtKeyError as e:
            raise SlurmError(f"cannot sign in to slurmrestd ({what}): {e}") from None
        headers = {"X-SLURM-USER-NAME": user, "X-SLURM-USER-TOKEN": token}
        try:
            response = await self._client().request(method, path, headers=headers, json=body)
        except httpx.TimeoutException as e:
            raise SlurmUnavailable(
                f"Slurm did not answer ({what}): slurmrestd at {self.url} took more than "
                f"{self.timeout:g} s"
            ) from e
        except httpx.TransportError as e:
            raise SlurmUnavailable(
                f"Slurm did not answer ({what}): cannot reach slurmrestd at {self.url} ({e})"
            ) from e
        if response.status_code in (401, 403):
            raise SlurmError(
                f"slurmrestd refused the hub's token for {user} ({what}, HTTP "
                f"{response.status_code}). The hub's key (slurm.rest.key_file) must be the "
                "cluster's AuthAltParameters=jwt_key, and slurm.conf must have "
                "AuthAltTypes=auth/jwt."
            )
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            if response.status_code >= 500 or response.status_code == 404:
                raise SlurmUnavailable(
                    f"Slurm did not answer ({what}): slurmrestd answered HTTP "
                    f"{response.status_code} for {path} (is the {self.api_version} plugin on?)"
                )
            raise SlurmError(f"slurmrestd answered {what} with HTTP {response.status_code}")
        _raise_errors(data, what)
        nothing_found = nothing_found_ok and bool(data.get("errors"))  # the only errors
        if response.status_code >= 400 and not nothing_found:
            raise SlurmError(f"Slurm refused {what}: HTTP {response.status_code}")
        return data

    def _slurm(self, tail: str) -> str:
        return f"/slurm/{self.api_version}/{tail}"

    # ------------------------------------------------------------------ users

    def home(self, username: str) -> str:
        """The user's home directory on the cluster (the site's template; no lookup)."""
        return fill_user_template(self.home_template, username=username)

    async def user(self, username: str) -> SlurmUser | None:
        """The user's record in Slurm's accounting (asked as the query user); None when
        Slurm has none, i.e. the user has no association. Nothing on the hub's host is
        asked: the home is the site's template (``slurm.rest.home``)."""
        if not POSIX_NAME.fullmatch(username):
            return None  # not a name Slurm's users can have
        path = f"/slurmdb/{self.api_version}/user/{username}"
        what = f"the lookup of user {username}"
        data = await self._call("GET", path, self.query_user, what, nothing_found_ok=True)
        return user_record(data, username, self.home(username))

    # ------------------------------------------------------------------ jobs

    async def submit(
        self,
        username: str,
        script: str,
        env: Mapping[str, str],
        dirs: Sequence[str] = (),
        files: Mapping[str, str] | None = None,
    ) -> str:
        """Submit ``script`` as ``username``; return the job id. ``dirs`` and ``files`` are
        made by the job itself, before anything else, as the user."""
        try:
            job = job_properties(script)
        except UnsupportedOption as e:
            raise SlurmError(f"the job script cannot be sent to slurmrestd: {e}") from None
        environment = {"PATH": DEFAULT_PATH, **dict(env)}
        job["environment"] = environment
        job.setdefault("current_working_directory", self.home(username))
        if dirs or files:
            output = job.get("standard_output", "")
            redirect = output if output and _under(output, dirs) else ""
            if redirect:
                job["standard_output"] = "/dev/null"
            first, _, rest = script.partition("\n")
            script = f"{first}\n{prologue(dirs, files or {}, redirect)}{rest}"
        data = await self._call(
            "POST",
            self._slurm("job/submit"),
            username,
            "the job submission",
            {"script": script, "job": job},
        )
        job_id = data.get("job_id")
        if not isinstance(job_id, int) or job_id <= 0:
            raise SlurmError(f"slurmrestd answered without a job id: {data!r:.200}")
        return str(job_id)

    async def _jobs(self) -> dict[str, Any]:
        return await self._call("GET", self._slurm("jobs"), self.query_user, "the queue query")

    async def query(self, job_ids: Iterable[str]) -> dict[str, JobInfo]:
        """One request for all ``job_ids``; jobs Slurm no longer knows are absent."""
        ids = [j for j in job_ids if j and j.isdigit()]
        if not ids:
            return {}
        return by_id(jobs_of(await self._jobs()), ids)

    async def jobs_named(self, prefix: str, states: str = "") -> list[JobInfo]:
        """Jobs whose name starts with ``prefix``: active ones, or all (``states="all"``)."""
        return named(jobs_of(await self._jobs()), prefix, states)

    async def cancel(self, username: str, job_id: str) -> None:
        """Cancel ``job_id`` as ``username``. A job already gone is not an error."""
        if not job_id.isdigit():
            raise ValueError(f"not a Slurm job id: {job_id!r}")
        try:
            await self._call(
                "DELETE", self._slurm(f"job/{job_id}"), username, f"cancelling job {job_id}"
            )
        except SlurmError as e:
            if _INVALID_JOB not in str(e):
                raise

    async def accounted_state(self, job_id: str) -> str:
        """The state accounting recorded for a job (``/slurmdb/.../job``); "" if none."""
        if not job_id.isdigit():
            raise ValueError(f"not a Slurm job id: {job_id!r}")
        path = f"/slurmdb/{self.api_version}/job/{job_id}"
        try:
            data = await self._call("GET", path, self.query_user, "the accounting query")
        except SlurmError as e:
            if _INVALID_JOB in str(e) or "not found" in str(e).lower():
                return ""
            raise
        return accounted_state(data, job_id)

    async def show(self, kind: str, name: str = "") -> list[dict[str, str]]:
        """Nodes or reservations with the keys ``scontrol show`` prints (those factoryhub
        reads); [] when Slurm has no such entity."""
        if kind == "node":
            data = await self._call("GET", self._slurm("nodes"), self.query_user, "the nodes")
            nodes = [node_view(n) for n in listed(data, "nodes", "the nodes")]
            return [n for n in nodes if not name or n["NodeName"] == name]
        if kind == "reservation":
            what = "the reservations"
            data = await self._call("GET", self._slurm("reservations"), self.query_user, what)
            found = [reservation_view(r) for r in listed(data, "reservations", what)]
            return [r for r in found if not name or r["ReservationName"] == name]
        raise ValueError(f"cannot show {kind} over REST")

    async def jobs_in_reservation(self, name: str) -> list[tuple[str, int, str]]:
        """(state, CPUs, memory such as "2048M") of every active job in reservation ``name``."""
        return reservation_jobs(await self._jobs(), name)
