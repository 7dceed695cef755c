"""Which handler runs a non-linear-type rule: the elementwise and routing rules, and the transformer rules."""

from __future__ import annotations

from ..errors import UnsupportedOpError
from . import attention, elementwise
from .elementwise import Handler
from .spec import RULES, Rule

HANDLERS: dict[str, Handler] = {**elementwise.HANDLERS, **attention.HANDLERS}


def handler_for(rule: Rule) -> Handler:
    if rule.name not in HANDLERS:
        raise UnsupportedOpError(
            f"rule {rule.name!r} has no handler for non-linear ops ({RULES[rule.name].ops})"
        )
    return HANDLERS[rule.name]
