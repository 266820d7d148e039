"""Who may do what with which report: the site file's ``reports.access`` rules, applied to
one user (their name, their identity-provider groups, whether they are a hub admin).

Everyone sees their own runs. ``see_all`` shows every run of the rule's reports; hub admins
may do everything.
"""

from __future__ import annotations

from collections.abc import Iterable

from factoryhub.hub.service_web import Person
from factoryhub.hub.site.reports import AccessRule

__all__ = ["ACTIONS", "Access", "Person"]

ACTIONS = ("run", "schedule", "see_all")


class Access:
    def __init__(self, rules: Iterable[AccessRule]) -> None:
        self.rules = tuple(rules)

    def may(self, person: Person, action: str, report: str) -> bool:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}")
        if person.admin:
            return True
        return any(
            action in r.allow and r.covers(person.name, person.groups, report) for r in self.rules
        )

    def reports_for(self, person: Person, reports: Iterable[str]) -> list[str]:
        """The reports ``person`` may do anything with."""
        return [r for r in reports if any(self.may(person, a, r) for a in ACTIONS)]

    def may_see_run(self, person: Person, run_user: str, report: str) -> bool:
        return run_user == person.name or self.may(person, "see_all", report)

    def refusal(self, action: str, report: str) -> str:
        """What a refused user reads: what they lack and who can give it."""
        verb = {"run": "run", "schedule": "schedule", "see_all": "see every run of"}[action]
        return (
            f"You may not {verb} the report '{report}'. Access to reports is given by group "
            "in the factory's site file (reports.access): ask the factory's staff to add "
            "you to a group that may."
        )
