"""The site file's ``spawner`` section."""

from __future__ import annotations

from factoryhub.hub.site.loader import parse_site

from .helpers import errors_of, example


def test_log_dir_placeholders() -> None:
    for bad in ("{home}/{user}/logs", "relative/{username}", "/x/{home", "/x/{}"):
        data = example()
        data["spawner"]["log_dir"] = bad
        err = errors_of(data)
        assert err.paths == ["spawner.log_dir"], bad
        assert "{home} and {username}" in str(err)
    for good in ("/var/log/factoryhub/{username}", "{home}/logs/{username}", "/tmp/logs"):
        data = example()
        data["spawner"]["log_dir"] = good
        s = parse_site(data)
        assert s.spawner.log_dir_for("/h/u", "u").startswith("/")
