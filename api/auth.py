"""Bearer tokens with scopes, kept as hashes only.

Scopes: ``customer`` (bound to one profile, which is all it can reach), ``scenario:<name>``
(reads what that scenario's subscription projects), ``operator`` (reviews, merge, split) and
``admin`` (everything). Tokens are random and long, so a plain SHA-256 of each is enough to
keep at rest: unlike a password there is nothing to guess, and the hash cannot be replayed.

Configured from ``IDGRAPH_API_TOKENS_FILE`` (a YAML or JSON file) or ``IDGRAPH_API_TOKENS``
(the same document inline): a list of ``{sha256, scopes, subject, profile_id}``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

ENV_TOKENS = "IDGRAPH_API_TOKENS"
ENV_TOKENS_FILE = "IDGRAPH_API_TOKENS_FILE"
ROLES = ("customer", "operator", "admin")


class AuthConfigError(ValueError):
    """A token configuration that cannot be used, with the reason."""


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "idg_" + secrets.token_urlsafe(32)


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: tuple[str, ...] = Field(min_length=1)
    subject: str = Field(min_length=1, max_length=200)
    profile_id: str | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("scopes")
    @classmethod
    def _known(cls, scopes: tuple[str, ...]) -> tuple[str, ...]:
        for scope in scopes:
            if scope not in ROLES and not (scope.startswith("scenario:") and len(scope) > len("scenario:")):
                raise ValueError(f"unknown scope {scope!r}: use customer, operator, admin or scenario:<name>")
        return scopes

    @model_validator(mode="after")
    def _customer_bound(self) -> "TokenEntry":
        if ("customer" in self.scopes) != (self.profile_id is not None):
            raise ValueError("a customer token needs a profile_id, and only a customer token may have one")
        return self


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's subject and what it may do."""

    subject: str
    scopes: frozenset[str]
    profile_id: str | None = None

    def has(self, role: str) -> bool:
        return role in self.scopes

    @property
    def scenarios(self) -> list[str]:
        return sorted(s.removeprefix("scenario:") for s in self.scopes if s.startswith("scenario:"))

    @property
    def staff(self) -> bool:
        return bool(self.scopes & {"operator", "admin"})


class TokenRegistry:
    """The configured tokens, by hash."""

    def __init__(self, entries: list[TokenEntry]) -> None:
        self._by_hash = {e.sha256: e for e in entries}

    def __len__(self) -> int:
        return len(self._by_hash)

    def authenticate(self, token: str) -> Principal | None:
        digest = hash_token(token)
        entry = self._by_hash.get(digest)
        if entry is None or not hmac.compare_digest(entry.sha256, digest):
            return None
        return Principal(entry.subject, frozenset(entry.scopes), entry.profile_id)

    def with_entry(self, entry: TokenEntry) -> "TokenRegistry":
        return TokenRegistry([*self._by_hash.values(), entry])

    def entries(self) -> list[TokenEntry]:
        return list(self._by_hash.values())

    @classmethod
    def parse(cls, text: str, source: str) -> "TokenRegistry":
        try:
            data: Any = yaml.safe_load(text) or []
        except yaml.YAMLError as exc:
            raise AuthConfigError(f"{source}: not valid YAML or JSON: {exc}") from None
        if isinstance(data, dict):
            data = data.get("tokens", [])
        if not isinstance(data, list):
            raise AuthConfigError(f"{source}: expected a list of tokens (or 'tokens:' holding one)")
        try:
            return cls([TokenEntry.model_validate(item) for item in data])
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise AuthConfigError(f"{source}: {problems}") from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "TokenRegistry":
        environ = os.environ if environ is None else environ
        registry = cls([])
        path = environ.get(ENV_TOKENS_FILE)
        if path:
            try:
                registry = cls.parse(Path(path).read_text(encoding="utf-8"), path)
            except OSError as exc:
                raise AuthConfigError(f"{ENV_TOKENS_FILE}: cannot read {path}: {exc.strerror}") from None
        inline = environ.get(ENV_TOKENS)
        if inline:
            for entry in cls.parse(inline, ENV_TOKENS)._by_hash.values():
                registry = registry.with_entry(entry)
        return registry


def inline_tokens_with(entry: TokenEntry, inline: str | None) -> str:
    """An ``IDGRAPH_API_TOKENS`` document holding ``entry`` beside every token ``inline`` (the
    variable as the user set it, if at all) configures; AuthConfigError if ``inline`` is bad."""
    configured = TokenRegistry.parse(inline, ENV_TOKENS) if inline else TokenRegistry([])
    return json.dumps([e.model_dump(exclude_none=True) for e in configured.with_entry(entry).entries()])


def issue(scopes: list[str], subject: str, profile_id: str | None = None) -> tuple[str, TokenEntry]:
    """A new token and the entry to configure for it (the token itself is shown once, never kept)."""
    token = new_token()
    return token, TokenEntry(sha256=hash_token(token), scopes=tuple(scopes), subject=subject, profile_id=profile_id)
