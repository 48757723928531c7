"""The profile API: customer data sovereignty and human review over HTTP (docs/api.md)."""

from api.app import create_app

__all__ = ["create_app"]
