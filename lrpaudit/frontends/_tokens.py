"""What both frontends say when an integer token-id input is used other than through its embedding lookup."""

from __future__ import annotations


def token_misuse(name: str) -> str:
    """Why an integer input read by anything but its embedding lookup (or an order-keeping reshape) is refused."""
    return (
        f"reads the integer input {name!r} as numbers; lrpaudit audits an integer input only as the token ids of "
        "an embedding lookup (a Gather from a constant table), and an input used as data (an attention mask, a "
        "padding test) cannot carry relevance: export the model without it"
    )
