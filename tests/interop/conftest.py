"""The interop tests reuse the end-to-end fixtures (edge, origin, client) on 127.0.0.1."""

from tests.e2e.conftest import client, edge, origin

__all__ = ["client", "edge", "origin"]
