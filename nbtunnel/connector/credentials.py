"""Re-export: the credential formats live in `nbtunnel.credentials` (shared with the edge)."""

from nbtunnel.credentials import Credentials, CredentialsError

__all__ = ["Credentials", "CredentialsError"]
