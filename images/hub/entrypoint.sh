#!/bin/bash
# Entry point of the factoryhub hub image.
#   (no arguments)  check the site file, then start JupyterHub with factoryhub's configuration
#   check           check the site file only: prints "ok: N profiles", or names every bad key
#                   and exits non-zero
#   anything else   run it (a shell, python -m factoryhub.hub.site check PATH, ...)
# The site file is $FACTORYHUB_SITE_FILE (default: the packaged example).
set -euo pipefail

if [ "$#" -gt 0 ] && [ "$1" != "check" ]; then
    exec "$@"
fi

site="${FACTORYHUB_SITE_FILE:-$(python -c 'from factoryhub.hub.site.loader import example_site_path; print(example_site_path())')}"
if ! python -m factoryhub.hub.site check "$site"; then
    echo "factoryhub-hub: the site file $site is not valid; the hub does not start." >&2
    exit 2
fi
[ "${1:-}" = "check" ] && exit 0

config="$(python -c 'import factoryhub.hub, pathlib; print(pathlib.Path(factoryhub.hub.__file__).parent / "jupyterhub_config.py")')"
exec jupyterhub -f "$config"
