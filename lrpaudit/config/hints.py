"""Did-you-mean hints for misspelt names (keys, rules, ops, presets): standard library only, so that
``lrpaudit presets`` can suggest a preset without loading the config schema."""

from __future__ import annotations

import difflib


def suggest(word: str, choices) -> str | None:
    """The closest choice to a misspelt word, if any is close."""
    found = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return found[0] if found else None
