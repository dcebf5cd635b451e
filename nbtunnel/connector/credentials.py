"""Re-export: the credential formats live in `nbtunnel.core.credentials` (shared with the edge)."""

from nbtunnel.core.credentials import Credentials, CredentialsError

__all__ = ["Credentials", "CredentialsError"]
