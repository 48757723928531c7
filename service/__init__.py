"""Use cases above the stores: resolve an event, operate on profiles (merge, split, review, erase)."""
