"""The hub home page's "Your courses" box: the courses a user takes or teaches, whether each
is open today, and their course server (start it, open it); and the courses whose trainers
invited them (``invited``: they answer on the Courses service's invitation page).

``courses_for_home(courses, db, user)`` is bound to the site's courses with
``functools.partial`` and handed to the template through ``c.JupyterHub.template_vars``
(JupyterHub calls it with the current user). It only reads, and tolerates a user object
without groups or spawners.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from factoryhub.spawners.courses.store import CourseStore
from factoryhub.spawners.model.courses import Course, apply_edits


def courses_for_home(courses: Iterable[Course], db: str, user: Any) -> list[dict[str, Any]]:
    name = getattr(user, "name", "")
    groups = {getattr(g, "name", str(g)) for g in (getattr(user, "groups", None) or ())}
    spawners = getattr(user, "spawners", None) or {}
    found = []
    for course in apply_edits(courses, CourseStore(db).edits() if db else {}):
        takes = course.is_participant(name, groups)
        teaches = course.is_trainer(name, groups)
        invited = course.invitation(name, groups) == "invited"
        if not takes and not teaches and not invited:
            continue
        spawner = spawners.get(course.name)
        running = bool(spawner is not None and getattr(spawner, "ready", False))
        found.append(
            {
                "name": course.name,
                "display_name": course.display_name,
                "when": course.when_text(),
                "open": course.is_open(),
                "message": course.closed_message(),
                "takes": takes,
                "teaches": teaches,
                "invited": invited,
                "running": running,
                "pending": bool(spawner is not None and getattr(spawner, "pending", None)),
            }
        )
    return found
