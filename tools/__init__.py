"""CI tooling that is not part of the product."""
