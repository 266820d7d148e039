"""The leaf model: the concepts the hub and the spawner share (profiles, projects, courses)
and the parsers and formatters they both use. Imports nothing from hub or spawner code."""
