"""cloudflared's reconnect backoff, pure: the caller supplies the random source.

Base 1 s, doubling per retry; the wait is uniform in [0, base * 2**retries); the exponent is
capped at `max_retries` but retries never stop; a successful registration resets it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    base: float = 1.0
    max_retries: int = 5
    retries: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        """Delay before the next attempt, and count the attempt."""
        exponent = min(self.retries, self.max_retries)
        self.retries += 1
        return self.rng.uniform(0.0, self.base * (2**exponent))

    @property
    def ceiling(self) -> float:
        """Upper bound of the next delay ("Retrying connection in up to 4s")."""
        return self.base * (2 ** min(self.retries, self.max_retries))

    def reset(self) -> None:
        self.retries = 0
