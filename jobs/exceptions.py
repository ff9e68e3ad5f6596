"""The app's small exception hierarchy."""

from __future__ import annotations

from typing import Any


class JobsError(Exception):
    """Base class of the errors raised by the jobs app."""


class ClaimLost(JobsError):
    """The worker no longer holds the job's claim.

    Its share's lease expired (another worker may have taken its chunks over)
    or it no longer holds the chunk of a result. Writes under the lost share
    are rejected (fencing) and the worker must stop working on the job.
    """


class SubmissionError(JobsError):
    """Invalid input. `errors` maps each bad field to what is wrong with it.

    `errors["urls"]`, when present, is a list of dicts, each with an `error`
    message; those about one URL also carry its 0-based `index`, the `value`
    (shortened) and, for URLs parsed from text, the 1-based `line`.
    Other fields map to a message string.
    """

    def __init__(self, errors: dict[str, Any]) -> None:
        super().__init__(errors)
        self.errors = errors
