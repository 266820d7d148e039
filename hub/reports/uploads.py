"""Report outputs in the "rest" access mode, where the Reports service cannot read homes
(in a pod, as uid 999): the run's job sends them (:mod:`.uploader`) and the service keeps
them in its own state folder (0600 files in 0700 folders) and serves them from there.

Each run gets a random token when it is submitted; the store keeps only its sha256. The
job gets the token in its environment. The token lets in exactly one upload for exactly
that run, while the run is queued or running; an upload that is not JSON, not shaped as
expected or over the size caps (:data:`CAPS`, the executed notebook's cap being the one
the service reads back in the local mode) uses the token up and fails the run, saying why.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path
from typing import Any

from tornado import web

from factoryhub.hub.reports.outputs import LOG_TAIL_BYTES, NOTEBOOK_MAX_BYTES
from factoryhub.hub.reports.store import RunStore
from factoryhub.spawners.private_state import private_dir, private_file

TOKEN_ENV = "FACTORYHUB_REPORT_UPLOAD_TOKEN"  # noqa: S105 - the name of a variable
URL_ENV = "FACTORYHUB_REPORT_UPLOAD_URL"
# bytes of each part, as UTF-8 text; "status" is the runner's short record
CAPS = {
    "notebook": NOTEBOOK_MAX_BYTES,
    "html": 2 * NOTEBOOK_MAX_BYTES,
    "log": LOG_TAIL_BYTES,
}
STATUS_CAP = 4096
# JSON escaping may double text at worst; a larger request is refused before it is read
MAX_BODY = 2 * (sum(CAPS.values()) + STATUS_CAP)
FILES = {"notebook": "executed.ipynb", "html": "report.html", "log": "job.log"}


class UploadRefused(ValueError):
    """The upload is not what a run's job sends: the run fails with this message."""


def new_token() -> tuple[str, str]:
    """A fresh token and the digest the store keeps."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest() if token else ""


def parse_upload(body: bytes) -> dict[str, bytes]:
    """The parts of an upload's body (a JSON object of texts), each within its cap."""
    if len(body) > MAX_BODY:
        raise UploadRefused(f"the upload is larger than {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise UploadRefused("the upload is not JSON") from None
    if not isinstance(data, dict):
        raise UploadRefused("the upload is not a JSON object")
    parts: dict[str, bytes] = {}
    for name, cap in CAPS.items():
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise UploadRefused(f"the upload's {name} is not text")
        raw = value.encode("utf-8", "replace")
        if len(raw) > cap:
            raise UploadRefused(f"the {name} is larger than the {cap} bytes the service keeps")
        parts[name] = raw
    status = json.dumps(data.get("status") if isinstance(data.get("status"), dict) else {})
    if len(status) > STATUS_CAP:
        raise UploadRefused(f"the status record is larger than {STATUS_CAP} bytes")
    parts["status"] = status.encode()
    return parts


class OutputStore:
    """Runs' uploaded outputs under the service's state folder: ``run-<id>/<part>``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)  # made (0700) by the first upload, not by a service's start

    def path(self, run_id: int, part: str) -> Path:
        name = FILES.get(part, "status.json")
        return self.root / f"run-{int(run_id)}" / name

    def save(self, run_id: int, parts: dict[str, bytes]) -> None:
        private_dir(self.root)  # mkdir's parents=True would leave it to the umask
        for part, data in parts.items():
            file = private_file(self.path(run_id, part))
            file.write_bytes(data)

    def read(self, run_id: int, part: str) -> bytes | None:
        try:
            return self.path(run_id, part).read_bytes()
        except FileNotFoundError:
            return None

    def has(self, run_id: int, part: str) -> bool:
        return self.path(run_id, part).is_file()


def accept(store: RunStore, outputs: OutputStore, run_id: int, token: str, body: bytes) -> None:
    """Keep ``body`` as run ``run_id``'s outputs when ``token`` is its unused upload token.
    Raises :class:`PermissionError` (the token lets nothing in, the run is unchanged) or
    :class:`UploadRefused` (the token is used up and the run failed with the reason)."""
    if not store.take_upload_token(run_id, digest(token)):
        raise PermissionError(
            f"This token allows no upload for run {run_id}: it is another run's, already "
            "used, or the run has ended."
        )
    try:
        outputs.save(run_id, parse_upload(body))
    except UploadRefused as e:
        store.move(run_id, "failed", error=f"The run's outputs were refused: {e}.")
        raise


class UploadApi(web.RequestHandler):
    """``POST api/runs/<id>/upload``: a run's job sends its outputs, with its run's token in
    ``Authorization: Bearer``. No hub login: the token is the whole right, so no XSRF
    check either (a browser cannot be made to send the header)."""

    def check_xsrf_cookie(self) -> None:
        return

    def prepare(self) -> None:
        length = int(self.request.headers.get("Content-Length", "0") or 0)
        if length > MAX_BODY:
            self.answer(413, f"The upload is larger than {MAX_BODY} bytes.")

    def answer(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish({"status": status, "message": message})

    def post(self, run_id: str) -> None:
        kind = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        if kind != "application/json":
            self.answer(415, "The upload must be application/json.")
            return
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        settings: dict[str, Any] = self.settings
        try:
            accept(
                settings["engine"].store,
                settings["engine"].uploads,
                int(run_id),
                token.strip() if scheme == "Bearer" else "",
                self.request.body,
            )
        except PermissionError as e:
            self.answer(403, str(e))
            return
        except UploadRefused as e:
            self.answer(413 if "larger" in str(e) else 400, f"{e}.")
            return
        self.answer(201, f"The outputs of run {run_id} are kept.")
