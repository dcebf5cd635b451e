"""Lab test fixtures (helpers live in lab_helpers.py: conftest modules share one name)."""

from __future__ import annotations

from lab_helpers import counting_origin

__all__ = ["counting_origin"]
