"""Identity resolution domain logic: contracts, normalisation, matching, decisions. Pure, no I/O."""
