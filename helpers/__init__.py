"""Notebook helpers shipped with factoryhub: importable code the template notebooks share."""
