"""What the integration tests and the benchmarks share: one hub runner (``hub``), one way to
wait that says what it saw (``waiting``) and one kernel client (``kernel``). Nothing here
imports pytest, so the benchmarks use it as they are."""
