"""The app's small exception hierarchy."""

from __future__ import annotations


class JobsError(Exception):
    """Base class of the errors raised by the jobs app."""


class ClaimLost(JobsError):
    """The worker no longer holds the job's claim.

    Its share's lease expired (another worker may have taken its chunks over)
    or it no longer holds the chunk of a result. Writes under the lost share
    are rejected (fencing) and the worker must stop working on the job.
    """
