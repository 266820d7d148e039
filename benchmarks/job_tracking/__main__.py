"""``python -m benchmarks.job_tracking`` (from the repository), or
``python benchmarks/job_tracking`` (the folder run as a script)."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # the folder run as a script: import from the repository
    sys.path[0] = str(Path(__file__).resolve().parents[2])

from benchmarks.job_tracking.main import main

sys.exit(main())
