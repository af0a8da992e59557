"""One error hierarchy for everything a user can get wrong.

The CLI catches :class:`NegmineError` and prints its message (no traceback) and exits non-zero; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence


class NegmineError(Exception):
    """A mistake the user can fix: the message says what, where, why and how."""

    exit_code = 2


class UnknownNameError(NegmineError):
    """A generator, task, profile, option or stage name that nothing registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str], hint: str = "") -> None:
        known = sorted(set(known))
        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        msg = f"unknown {kind} {name!r}."
        if close:
            msg += f" Did you mean {close[0]!r}?"
        msg += f" Known {kind}s: {', '.join(known) if known else '(none)'}."
        if hint:
            msg += f" {hint}"
        super().__init__(msg)


class ConfigError(NegmineError):
    """A configuration with one or more problems; all of them are reported at once."""

    def __init__(self, problems: Sequence[str], source: str = "configuration") -> None:
        self.problems = list(problems)
        lines = [f"{source} has {len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}:"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class PluginError(NegmineError):
    """A plugin that failed to load, or that registered something invalid or twice."""


class MissingCapabilityError(NegmineError):
    """A generator needs something (dense maps, latents, a GAN, ...) that the task cannot provide."""


class NonFiniteLossError(NegmineError):
    """The loss became NaN or infinite; training stopped and the last good checkpoint was kept."""


class DataError(NegmineError):
    """A missing, corrupt or inconsistent data file."""


class CheckpointError(NegmineError):
    """A checkpoint that is missing, corrupt, or does not fit the run it is resumed into."""


def closest(name: str, known: Iterable[str]) -> str | None:
    """The closest known name to ``name``, or None when nothing is close."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return matches[0] if matches else None
