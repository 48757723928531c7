"""Sandboxes: isolated copies of the live graph where a rule change is tried before it goes live."""
