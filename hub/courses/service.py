"""Run the Courses service: ``python -m factoryhub.hub.courses.service``.

The hub starts it as a managed service (``hub.services.courses_settings``) with the
service's token, URL and prefix in ``JUPYTERHUB_*`` variables and the site file in
``FACTORYHUB_SITE_FILE``. Trainers' edits and actions are in ``<hub state_dir>/courses/
courses.sqlite`` (the spawner reads the edits from there too). Every few seconds it keeps
each course's hub group equal to its participants and stops the servers of courses that
have ended. It ends with the hub that started it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from pathlib import Path

from factoryhub.hub.courses.app import make_app
from factoryhub.hub.courses.desk import CourseDesk
from factoryhub.hub.courses.roster import Hub, HubError
from factoryhub.hub.service_web import listen_address, run_until_stopped
from factoryhub.hub.site.loader import SiteError, example_site_path, load_site
from factoryhub.spawners.courses.store import CourseStore
from factoryhub.spawners.slurm.access import make_client

log = logging.getLogger("factoryhub.courses")
TICK_S = 5.0


def store_path(state_dir: str) -> Path:
    return Path(state_dir) / "courses" / "courses.sqlite"


async def serve() -> None:
    site_file = os.environ.get("FACTORYHUB_SITE_FILE") or str(example_site_path())
    try:
        site = load_site(site_file)
    except SiteError as e:
        log.error("the site file is not valid, the Courses service does not start:\n%s", e)
        sys.exit(2)
    hub = Hub(
        os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api"),
        os.environ.get("JUPYTERHUB_API_TOKEN", ""),
    )
    slurm = make_client(site.slurm.access, site.slurm.rest)
    desk = CourseDesk(site, CourseStore(store_path(site.hub.state_dir)), hub, slurm)
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/courses/")
    base_url = os.environ.get("JUPYTERHUB_BASE_URL", "/")
    app = make_app(desk, prefix, base_url + "hub/", base_url, cookie_secret=secrets.token_bytes(32))
    port, address = listen_address(site.courses.port)
    app.listen(port, address, xheaders=True)
    log.info(
        "Courses service on %s:%s (prefix %s), %d courses",
        address,
        port,
        prefix,
        len(desk.courses()),
    )
    await desk.prepare()

    async def tick() -> None:
        try:
            await desk.tick()
        except HubError as e:
            log.warning("the hub did not answer the courses' upkeep: %s", e.message)

    await tick()
    await run_until_stopped(tick, TICK_S, log, "Courses")


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname)1.1s %(asctime)s courses] %(message)s"
    )
    asyncio.run(serve())


if __name__ == "__main__":
    main()
