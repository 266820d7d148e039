"""JupyterHub configuration of factoryhub: load the site file, set traits.

The site file is ``$FACTORYHUB_SITE_FILE`` (default: the packaged example). A bad
file stops the hub here with every bad key named.
"""

import os
import sys

from traitlets.config import Config

from factoryhub.hub.hub_config import SecretMissing, hub_settings
from factoryhub.hub.site import SiteError, example_site_path, load_site

c = get_config()  # type: ignore[name-defined]  # noqa: F821

_site_path = os.environ.get("FACTORYHUB_SITE_FILE") or str(example_site_path())
try:
    _site = load_site(_site_path)
except SiteError as _error:
    print(
        f"factoryhub: the site file is not valid, the hub will not start.\n{_error}",
        file=sys.stderr,
    )
    sys.exit(2)

try:
    c.merge(Config(hub_settings(_site, os.environ)))
except SecretMissing as _error:
    print(f"factoryhub: the hub will not start.\n{_site_path}: {_error}", file=sys.stderr)
    sys.exit(2)
