"""Errors a user can act on. The CLI prints them without a traceback and exits 2."""
from __future__ import annotations

from dataclasses import dataclass


class LoupeError(Exception):
    """Base class for user-facing errors (bad input, not a bug)."""


class UsageError(LoupeError):
    """A bad command line, source spec or report spec."""


class DataError(UsageError, ValueError):
    """A data set (images, masks, annotations) that cannot be read; the message names the file and the
    field. Also a ``ValueError``, as the data readers' errors were before."""


class PluginError(LoupeError):
    """A plugin registered something invalid or failed to load."""


@dataclass(frozen=True)
class RecipeProblem:
    """One problem in a recipe, located: where it is and what is wrong.

    ``section`` is ``preprocess`` or ``inspect`` for a step (with ``index``, the
    step's position in that list, and ``step``, its name or tool id), or the
    top-level field (``source``, ``report``, ``requires``, ...) otherwise, or
    ``None`` for the document as a whole. ``field`` is the dotted path inside the
    step or section (``params.min_area``, ``limits.count.min``, ``roi``), empty
    when the problem is the whole step or section. ``message`` is plain text.
    """

    message: str
    section: str | None = None
    index: int | None = None
    step: str | None = None
    field: str = ""

    def __str__(self) -> str:
        if self.section in ("preprocess", "inspect") and self.index is not None:
            return f"{self.section}[{self.index}] ({self.step or '?'}): {self.field or 'step'}: {self.message}"
        where = ".".join(x for x in (self.section or "", self.field) if x)
        if self.index is not None and self.section:
            where = f"{self.section}[{self.index}]" + (f".{self.field}" if self.field else "")
        return f"{where or 'recipe'}: {self.message}"

    def to_dict(self) -> dict:
        return {"section": self.section, "index": self.index, "step": self.step, "field": self.field,
                "message": self.message}


class RecipeError(LoupeError):
    """A recipe failed validation: every problem found, all at once.

    ``details`` is the list of ``RecipeProblem`` (section, index, step, field,
    message); ``problems`` the same as text, each naming the step and the field,
    e.g. ``inspect[0] (coins): params.min_area: Input should be a valid number``.
    ``str(error)`` puts the file name in front of each.
    """

    def __init__(self, file: str, problems: "list[str | RecipeProblem]"):
        self.file = file
        self.details: list[RecipeProblem] = [p if isinstance(p, RecipeProblem) else RecipeProblem(str(p))
                                             for p in problems]
        # a problem given as text is already located by its author (a station file, say): keep it as written
        self.problems = [p if isinstance(p, str) else str(p) for p in problems]
        super().__init__("\n".join(f"{file}: {p}" for p in self.problems))


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
