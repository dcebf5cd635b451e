"""Server-side X25519MLKEM768 (TLS group 0x11EC) for aioquic 1.x.

cloudflared's Go TLS client sends exactly one key share, X25519MLKEM768, and aioquic can
neither answer it nor send a HelloRetryRequest, so every handshake fails with "No supported
key share". This patch teaches ``aioquic.tls`` the hybrid group (draft-ietf-tls-ecdhe-mlkem):

* client share  = ML-KEM-768 encapsulation key (1184 bytes) || X25519 public key (32)
* server share  = ML-KEM-768 ciphertext (1088 bytes) || X25519 public key (32)
* shared secret = ML-KEM shared secret (32) || X25519 shared secret (32)

aioquic's server loop only knows X25519/X448/EC keys, so the patch swaps the module-level
``x25519`` name in ``aioquic.tls`` for a shim: a hybrid peer key passes the
``isinstance(.., X25519PublicKey)`` test, and the "X25519 private key" the server then
generates performs the encapsulation in ``exchange()``. Only server contexts advertise the
group. Relies on aioquic internals (``decode_public_key``, ``encode_public_key``,
``Context.__init__``/``_supported_groups``, module-level ``x25519``): pin aioquic <1.8.
"""

from __future__ import annotations

import abc
from typing import Any

from cryptography.hazmat.primitives.asymmetric import x25519 as real_x25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

X25519MLKEM768 = 0x11EC
MLKEM768_EK_LEN = 1184
X25519_LEN = 32
_PATCH_FLAG = "_nbtunnel_x25519mlkem768"

try:
    from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PublicKey

    _MLKEM_ERROR: str | None = None
except ImportError as exc:  # cryptography < 47 has no ML-KEM
    MLKEM768PublicKey = None  # type: ignore[assignment,misc]
    _MLKEM_ERROR = (
        f"the installed cryptography has no ML-KEM ({exc}); an aioquic edge cannot answer "
        "cloudflared's X25519MLKEM768-only ClientHello: use the qh3 backend or cryptography>=47"
    )


def mlkem_unavailable_reason() -> str | None:
    """None when ML-KEM-768 works here, else a sentence saying why it does not."""
    if _MLKEM_ERROR is not None:
        return _MLKEM_ERROR
    try:
        from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey

        MLKEM768PrivateKey.generate().public_key().encapsulate()
    except Exception as exc:  # UnsupportedAlgorithm on an OpenSSL without ML-KEM
        return f"ML-KEM-768 is not usable with this cryptography/OpenSSL build: {exc}"
    return None


class _HybridPeerKey:
    """The client's X25519MLKEM768 share, split into its two halves."""

    def __init__(self, data: bytes) -> None:
        if len(data) != MLKEM768_EK_LEN + X25519_LEN:
            raise ValueError("bad X25519MLKEM768 key share length")
        assert MLKEM768PublicKey is not None
        self.mlkem = MLKEM768PublicKey.from_public_bytes(data[:MLKEM768_EK_LEN])
        self.x25519 = real_x25519.X25519PublicKey.from_public_bytes(data[MLKEM768_EK_LEN:])


class _AnyX25519PublicKey(abc.ABC):  # noqa: B024 - only a registry for isinstance()
    """Stands in for ``x25519.X25519PublicKey`` inside aioquic.tls: real keys and hybrids."""

    from_public_bytes = staticmethod(real_x25519.X25519PublicKey.from_public_bytes)


_AnyX25519PublicKey.register(real_x25519.X25519PublicKey)  # type: ignore[type-abstract]
_AnyX25519PublicKey.register(_HybridPeerKey)


class _ServerShare:
    """Public half returned before ``exchange()``; it is encoded only after the exchange."""

    def __init__(self, owner: _PrivateKey) -> None:
        self.owner = owner


class _PrivateKey:
    """X25519 private key that also answers hybrid peer shares by encapsulating."""

    def __init__(self) -> None:
        self.key = real_x25519.X25519PrivateKey.generate()
        self.ciphertext: bytes | None = None

    @classmethod
    def generate(cls) -> _PrivateKey:
        return cls()

    def public_key(self) -> _ServerShare:
        return _ServerShare(self)

    def exchange(self, peer: Any) -> bytes:
        if isinstance(peer, _HybridPeerKey):
            mlkem_secret, self.ciphertext = peer.mlkem.encapsulate()
            return mlkem_secret + self.key.exchange(peer.x25519)
        return self.key.exchange(peer)

    def raw_public(self) -> bytes:
        return self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


class _X25519Shim:
    """Replacement for the ``x25519`` module object referenced by aioquic.tls."""

    X25519PublicKey = _AnyX25519PublicKey
    X25519PrivateKey = _PrivateKey


def apply() -> str | None:
    """Patch aioquic.tls once; returns None on success or why ML-KEM is unavailable."""
    reason = mlkem_unavailable_reason()
    if reason is not None:
        return reason
    from aioquic import tls

    if getattr(tls, _PATCH_FLAG, False):
        return None
    original_decode = tls.decode_public_key
    original_encode = tls.encode_public_key
    original_init = tls.Context.__init__

    def decode_public_key(key_share: tuple[int, bytes]) -> Any:
        if key_share[0] == X25519MLKEM768:
            return _HybridPeerKey(key_share[1])
        return original_decode(key_share)

    def encode_public_key(public_key: Any) -> tuple[int, bytes]:
        if isinstance(public_key, _ServerShare):
            owner = public_key.owner
            if owner.ciphertext is not None:
                return (X25519MLKEM768, owner.ciphertext + owner.raw_public())
            return (tls.Group.X25519, owner.raw_public())
        return original_encode(public_key)

    def context_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if not self._is_client:
            self._supported_groups.insert(0, X25519MLKEM768)

    tls.decode_public_key = decode_public_key
    tls.encode_public_key = encode_public_key
    tls.Context.__init__ = context_init  # type: ignore[method-assign]
    tls.x25519 = _X25519Shim  # type: ignore[assignment]
    setattr(tls, _PATCH_FLAG, True)
    return None
