"""Exception root of the hq package."""

from kit.web import HttpProblem


class HQError(Exception):
    """Root of every error raised by hq/."""


class HQHttpError(HQError, HttpProblem):
    """An HQ error that reaches HTTP with its status."""
