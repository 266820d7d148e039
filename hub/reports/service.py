"""Run the Reports service: ``python -m factoryhub.hub.reports.service``.

The hub starts it as a managed service (``hub.services.reports_settings``) with the
service's token, URL and prefix in ``JUPYTERHUB_*`` variables and the site file in
``FACTORYHUB_SITE_FILE``. State is in ``<hub state_dir>/reports/runs.sqlite``; on start,
runs are reconciled with Slurm. The service ends with the hub that started it (a hub killed
with SIGKILL leaves no service behind to hold the port); the next hub starts a new one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import urljoin

from factoryhub.hub.hub_config import hub_tag
from factoryhub.hub.reports.app import make_app
from factoryhub.hub.reports.catalog import Catalog, built_in_folder
from factoryhub.hub.reports.engine import ReportEngine
from factoryhub.hub.reports.scheduling import hub_lookup, sync_site_reports
from factoryhub.hub.reports.store import RunStore
from factoryhub.hub.reports.uploads import MAX_BODY
from factoryhub.hub.service_web import People, listen_address, run_until_stopped
from factoryhub.hub.site.loader import SiteError, example_site_path, load_site
from factoryhub.spawners.slurm.access import make_client

log = logging.getLogger("factoryhub.reports")


def store_path(state_dir: str) -> Path:
    return Path(state_dir) / "reports" / "runs.sqlite"


async def serve() -> None:
    site_file = os.environ.get("FACTORYHUB_SITE_FILE") or str(example_site_path())
    try:
        site = load_site(site_file)
    except SiteError as e:
        log.error("the site file is not valid, the Reports service does not start:\n%s", e)
        sys.exit(2)
    settings = site.reports
    store = RunStore(store_path(site.hub.state_dir))
    catalog = Catalog([built_in_folder(), *settings.folders])
    api_url = os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")
    token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/reports/")
    engine = ReportEngine(
        site,
        store,
        catalog,
        make_client(site.slurm.access, site.slurm.rest),
        hub_tag(site),
        lookup=hub_lookup(api_url, token),
        # where the runs' jobs send their outputs in the rest mode: through the hub's proxy
        # (the prefix holds the hub's base URL already, so only public_url's origin is kept)
        service_url=urljoin(site.hub.public_url, prefix),
    )
    sync_site_reports(engine)
    hub_prefix = os.environ.get("JUPYTERHUB_BASE_URL", "/") + "hub/"
    people = People(api_url, token)
    app = make_app(engine, prefix, hub_prefix, people, cookie_secret=secrets.token_bytes(32))
    port, address = listen_address(settings.port)
    app.listen(port, address, xheaders=True, max_body_size=MAX_BODY)
    log.info(
        "Reports service on %s:%s (prefix %s), %d reports",
        address,
        port,
        prefix,
        len(catalog.reports()),
    )

    await engine.recover()
    await engine.follow()
    await run_until_stopped(engine.tick, settings.poll_interval, log, "Reports")


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="[%(levelname)1.1s %(asctime)s reports] %(message)s"
    )
    asyncio.run(serve())


if __name__ == "__main__":
    main()
