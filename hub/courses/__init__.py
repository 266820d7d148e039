"""The Courses service: trainers' course pages (hub service at /services/courses/)."""
