"""``python -m factoryhub.hub.site check PATH`` / ``schema``: see :mod:`.loader`."""

from factoryhub.hub.site.loader import main

raise SystemExit(main())
