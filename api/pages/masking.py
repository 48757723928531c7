"""Showing personal data partly: identifiers masked for the customer's own page, events summed up."""

from __future__ import annotations

from typing import Any


def mask(type_: str, value: str) -> str:
    """Enough to recognise one's own identifier, not enough to read it off a screen."""
    if type_ == "email" and "@" in value:
        local, _, domain = value.partition("@")
        return f"{local[:1]}•••@{domain}"
    if type_ == "phone" and len(value) > 7:
        return f"{value[:-8]}••••{value[-4:]}"
    if len(value) > 6:
        return f"{value[:2]}••••{value[-2:]}"
    return "••••"


def mask_identifiers(identifiers: dict[str, list[str]]) -> dict[str, list[str]]:
    return {type_: [mask(type_, v) for v in values] for type_, values in identifiers.items()}


def _flat(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_flat(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_flat(v) for v in value)
    return str(value)


def summary(event: dict[str, Any]) -> str:
    """A touchpoint's traits and payload in one line (identifiers left out: they are shown masked above)."""
    parts = [_flat(event[k]) for k in ("traits", "payload") if event.get(k)]
    return "; ".join(p for p in parts if p)
