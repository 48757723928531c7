"""Models that cache values derived from their fields (``functools.cached_property``).

pydantic's ``model_copy`` copies the instance's dict, cached values included, so a copy with other
fields would keep its original's derived values: a rule set copied with another threshold kept the
original's ``model_version``, and promoting it was refused as not hashing to its version. Here a
copy is validated afresh from its fields, so it derives everything again and its changes are
checked as a load would check them.
"""

from __future__ import annotations

from typing import Any, Mapping, Self

from pydantic import BaseModel


class DerivedModel(BaseModel):
    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update``'s fields replaced, validated again (``deep`` is implied: nothing is shared)."""
        return self.model_validate({**self.model_dump(), **(update or {})})
