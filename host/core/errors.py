"""Errors a user can act on. The CLI prints them without a traceback and exits 2."""
from __future__ import annotations


class LoupeError(Exception):
    """Base class for user-facing errors (bad input, not a bug)."""


class UsageError(LoupeError):
    """A bad command line, source spec or report spec."""


class PluginError(LoupeError):
    """A plugin registered something invalid or failed to load."""


class RecipeError(LoupeError):
    """A recipe failed validation. ``problems`` lists every problem found.

    Each problem names the file, the step and the field, e.g.
    ``recipe.yaml: inspect[0] (coins): params.min_area: Input should be a valid number``.
    """

    def __init__(self, file: str, problems: list[str]):
        self.file = file
        self.problems = problems
        super().__init__("\n".join(f"{file}: {p}" for p in problems))


class BundleError(LoupeError):
    """A model bundle is missing, incomplete or fails its hash check."""


class StationActionError(LoupeError):
    """A station action that the current state does not allow (or that failed).

    ``code`` is short and stable (``busy``, ``not_ready``, ``buffer_full``,
    ``unknown_job``, ``bad_recipe``, ``no_result``), so line adapters can map it
    onto their protocol's error replies.
    """

    def __init__(self, code: str, message: str):
        self.code = code
        super().__init__(message)
