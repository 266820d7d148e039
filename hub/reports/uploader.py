"""Runs inside a report run's job, as the user, in the "rest" access mode: sends the run's
outputs to the Reports service, which cannot read the user's home.

The job script passes this file's text to ``python -I -c`` (the user's environment may hold
an older factoryhub, or none): the standard library only, nothing imported from the project.
The token comes in the environment (``FACTORYHUB_REPORT_UPLOAD_TOKEN``), never in the
script's text; it allows this one upload for this one run. A refused or failed upload says
why on stderr (the job's log) and exits 1, so the job fails and the service fails the run.
"""

import json
import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 120
LOG_TAIL_BYTES = 64 * 1024


def read_text(path: str, tail: int = 0) -> str | None:
    """The file's text (its last ``tail`` bytes when given), None when there is none."""
    try:
        with open(path, "rb") as f:
            if tail:
                f.seek(max(0, os.fstat(f.fileno()).st_size - tail))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def main(argv: list[str]) -> int:
    """``argv``: papermill's exit status, the executed notebook, the HTML, the job's log."""
    status, executed, html, log = argv[1:5]
    url = os.environ.get("FACTORYHUB_REPORT_UPLOAD_URL", "")
    token = os.environ.get("FACTORYHUB_REPORT_UPLOAD_TOKEN", "")
    if not url or not token:
        print("factoryhub: no upload URL or token in the job's environment", file=sys.stderr)
        return 1
    sys.stderr.flush()
    body = {
        "status": {"papermill_exit": int(status) if status.isdigit() else -1},
        "notebook": read_text(executed),
        "html": read_text(html),
        "log": read_text(log, LOG_TAIL_BYTES),
    }
    request = urllib.request.Request(  # noqa: S310 - the service's http(s) URL
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:  # noqa: S310
            answer.read()
    except urllib.error.HTTPError as e:
        detail = e.read(2000).decode("utf-8", "replace")
        print(f"factoryhub: the Reports service refused the outputs ({e.code}): {detail}",
              file=sys.stderr)  # fmt: skip
        return 1
    except (OSError, ValueError) as e:
        print(f"factoryhub: the outputs could not be sent to {url}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
