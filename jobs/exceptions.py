"""The app's small exception hierarchy."""

from __future__ import annotations


class JobsError(Exception):
    """Base class of the errors raised by the jobs app."""


class ClaimLost(JobsError):
    """The worker no longer holds the job's claim.

    Its lease expired and another worker took the job over, or the job was
    released or finished elsewhere. Writes under the old claim token are
    rejected (fencing) and the worker must stop working on the job.
    """


class JobStateError(JobsError):
    """A transition the job's current state does not allow."""
