"""The site file (``factory.yaml``): one module per section holding its model, defaults (from
the schema) and checks; :mod:`.loader` reads, validates and builds the typed :class:`Site`."""

from factoryhub.hub.site.loader import (
    Site,
    SiteError,
    example_site_path,
    load_site,
    parse_site,
)

__all__ = ["Site", "SiteError", "example_site_path", "load_site", "parse_site"]
