"""goalworker: detect workflow goals in contact-event streams and exit achieving enrollments."""

__version__ = "0.1.0"
