"""Which certificate authorities a client trusts, as a file and/or PEM data.

Cloudflare's tunnel edge presents certificates that chain to Cloudflare's Origin CA roots, which
are in no public store; cloudflared embeds them and trusts them together with the system store,
unless ``--cacert`` is given, which then replaces the whole pool. `Trust.cloudflare_edge` does the
same with the copy bundled in ``certs/`` (see ``certs/NOTICE``). Cloudflare's public services
(api.trycloudflare.com, DNS over TLS on 1.1.1.1) use ordinary WebPKI certificates:
`Trust.web` is the system store plus an optional extra CA. Every `Trust` carries a description
so a failed handshake can say which roots were trusted.
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import re
import ssl
from dataclasses import dataclass

ROOTS_FILE = "cloudflare-origin-roots.pem"
_PEM_BLOCK = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----")


def clean_pem(data: bytes) -> bytes:
    """Only the certificate blocks: qh3 silently stops at junk between them, and ssl wants
    ASCII (bundles carry comments, some in UTF-8)."""
    return b"".join(block + b"\n" for block in _PEM_BLOCK.findall(data))


@functools.cache
def cloudflare_roots_pem() -> bytes:
    """The three bundled Cloudflare Origin CA roots (clean PEM, nothing but certificates)."""
    return (importlib.resources.files("nbtunnel.transport") / "certs" / ROOTS_FILE).read_bytes()


@functools.cache
def system_roots_pem() -> bytes:
    """The system's trust store as PEM (OpenSSL's default CA file, else what ssl loads)."""
    paths = ssl.get_default_verify_paths()
    for path in (paths.cafile, paths.openssl_cafile):
        if path and os.path.isfile(path):
            try:
                with open(path, "rb") as fh:
                    return clean_pem(fh.read())
            except OSError:
                continue
    ctx = ssl.create_default_context()
    ders = ctx.get_ca_certs(binary_form=True)
    return "".join(ssl.DER_cert_to_PEM_cert(der) for der in ders).encode()


@dataclass(frozen=True)
class Trust:
    """CA material for verifying a server; empty means the library's default (system) store."""

    cafile: str | None = None
    cadata: bytes | None = None
    description: str = "the system trust store"

    @classmethod
    def from_file(cls, cafile: str) -> Trust:
        return cls(cafile=str(cafile), description=f"only the CA file {cafile}")

    @classmethod
    def cloudflare_edge(cls, cacert: str | None = None) -> Trust:
        """cloudflared's edge pool: --cacert alone, else the bundled roots + the system store."""
        if cacert:
            return cls.from_file(cacert)
        return cls(cadata=cloudflare_roots_pem() + system_roots_pem(),
                   description="Cloudflare's origin CA roots (bundled) and the system store")

    @classmethod
    def web(cls, extra_cafile: str | None = None) -> Trust:
        """Public HTTPS/DoT services: the system store, plus extra_cafile when given."""
        if not extra_cafile:
            return cls()
        return cls(cafile=str(extra_cafile), cadata=system_roots_pem(),
                   description=f"the system trust store and the CA file {extra_cafile}")

    @property
    def is_default(self) -> bool:
        return self.cafile is None and self.cadata is None

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context (TLS 1.2+) trusting exactly this material."""
        ctx = ssl.create_default_context(
            cafile=self.cafile, cadata=self.cadata.decode("ascii") if self.cadata else None)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx
