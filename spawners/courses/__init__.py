"""The spawner side of courses: the course-server part of the spawner (:mod:`.servers`), the
trainers' edits (:mod:`.store`) and the materials sync that runs in the participant's job
(:mod:`.materials`). The course model is :mod:`factoryhub.spawners.model.courses`; the Courses
service is :mod:`factoryhub.hub.courses`."""
