"""What every ScanLens asset shares: owner, retry policy, and how user errors fail a step."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from assets.reporting import markdown_image as markdown_image  # also used where dagster is not imported
from pipeline.errors import UserInputError

OWNER = "team:scanlens"
#: Retries for steps whose failures can be transient (file I/O). Deterministic failures opt out
#: through :func:`user_errors_are_final`.
IO_RETRY = dg.RetryPolicy(max_retries=2, delay=5)


@contextmanager
def user_errors_are_final() -> Iterator[None]:
    """Turn a :class:`UserInputError` into a ``dagster.Failure`` that is not retried, with its message."""
    try:
        yield
    except UserInputError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from None
