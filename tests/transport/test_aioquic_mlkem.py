"""The aioquic X25519MLKEM768 patch: idempotent, and a clear message when ML-KEM is missing.

The end-to-end proof (a qh3 client sending only an X25519MLKEM768 share, as cloudflared does,
completes a handshake with the patched aioquic server) is test_pq_only_key_share_like_cloudflared.
"""

from __future__ import annotations

import pytest

pytest.importorskip("aioquic")

from nbtunnel.transport.quic import _aioquic_mlkem


def test_apply_is_idempotent() -> None:
    from aioquic import tls

    assert _aioquic_mlkem.apply() is None
    decode = tls.decode_public_key
    assert _aioquic_mlkem.apply() is None
    assert tls.decode_public_key is decode
    context = tls.Context(is_client=False)
    assert context._supported_groups.count(_aioquic_mlkem.X25519MLKEM768) == 1
    assert _aioquic_mlkem.X25519MLKEM768 not in tls.Context(is_client=True)._supported_groups


def test_degrades_with_a_clear_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_aioquic_mlkem, "_MLKEM_ERROR", "no ML-KEM here: use the qh3 backend")
    assert "qh3" in (_aioquic_mlkem.apply() or "")
