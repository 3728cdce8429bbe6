"""Errors that retrying cannot fix.

The simulation runner retries a failed step after a back-off, which heals a server that is
restarting but not a missing model, wrong keys or a malformed setting. An exception class that
also derives from `NeedsAction` says so; the runner stops at once with its message. Across a
notebook kernel only the exception's class name survives, so the runner recognises these by name.
"""

from __future__ import annotations


class NeedsAction(Exception):
    """Retrying cannot fix this: a setting, a credential or the model registry must change first.

    The message says what was looked up, where, and which setting or command to check.
    """


def needs_action_names() -> set[str]:
    """The class names of every loaded subclass of NeedsAction."""
    names, pending = set(), [NeedsAction]
    while pending:
        for subclass in pending.pop().__subclasses__():
            names.add(subclass.__name__)
            pending.append(subclass)
    return names
