"""Certificates of the HTTPS public front: files chosen by SNI, or issued by the local CA.

With certificate files (`--https-cert/--https-key`, repeatable, a wildcard `*.<domain>` one
usually), the TLS server name picks the certificate whose names cover it (exact name first, then
a one-label wildcard), else the first one. `reload()` (SIGHUP) re-reads every file and swaps the
contexts for new handshakes only: open connections keep the session they negotiated. A file
that fails to load leaves the previous certificates in place and says why.

Without files, the edge's local CA (the one connectors already trust) issues a certificate per
hostname on the first handshake for it, for names the edge serves (its domain and API names,
and hostnames routed to a tunnel), so a browser or curl that trusts the CA file gets a valid
chain for any quick-tunnel hostname. Issued certificates are kept in memory (bounded).
"""

from __future__ import annotations

import logging
import ssl
import tempfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from nbtunnel.core.errors import NbtunnelError
from nbtunnel.transport.tls import LocalCA

log = logging.getLogger("nbtunnel.edge.https")

ALPN = ["h2", "http/1.1"]
MAX_ISSUED = 512


class CertificateError(NbtunnelError):
    """A certificate or key file cannot be used; the message names the file."""


def _context(cert: Path, key: Path, alpn: list[str]) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"cannot load certificate {cert} with key {key}: {exc}") from exc
    ctx.set_alpn_protocols(alpn)
    return ctx


def _names(cert: Path) -> list[str]:
    try:
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise CertificateError(f"cannot read certificate {cert}: {exc}") from exc
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [n.lower() for n in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return []


@dataclass(frozen=True)
class _Loaded:
    context: ssl.SSLContext
    names: tuple[str, ...]


def covers(pattern: str, name: str) -> bool:
    """Does a certificate name cover `name`? (`*.a.b` covers `x.a.b`, one label only.)"""
    if pattern == name:
        return True
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return False


class CertStore:
    """The HTTPS front's TLS server context (see module docstring)."""

    def __init__(
        self,
        pairs: list[tuple[Path, Path]],
        *,
        ca: LocalCA | None = None,
        may_issue: Callable[[str], bool] = lambda _: False,
        alpn: list[str] | None = None,
    ) -> None:
        if not pairs and ca is None:
            raise CertificateError("the HTTPS front needs certificate files or a local CA")
        self.pairs = [(Path(c), Path(k)) for c, k in pairs]
        self.ca = ca
        self.may_issue = may_issue
        self.alpn = alpn or ALPN
        self.reloads = 0
        self._loaded: list[_Loaded] = []
        self._issued: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self._tmp = tempfile.TemporaryDirectory(prefix="nbtunnel-https-")
        if self.pairs:
            self._loaded = self._load()
        assert ca is not None or self._loaded
        default = (self._loaded[0].context if self._loaded else
                   _context(ca.cert_path, ca.key_path, self.alpn))  # type: ignore[union-attr]
        self.context = default
        self._default = default
        self.context.sni_callback = self._on_sni

    def _load(self) -> list[_Loaded]:
        return [_Loaded(_context(c, k, self.alpn), tuple(_names(c))) for c, k in self.pairs]

    def reload(self) -> None:
        """Re-read the files for new handshakes; on failure keep the old ones and raise."""
        if not self.pairs:
            self._issued.clear()  # the CA mode re-issues on demand
            self.reloads += 1
            return
        loaded = self._load()
        self._loaded = loaded
        self._default = loaded[0].context
        self.reloads += 1
        log.info("HTTPS certificates reloaded: %s", ", ".join(str(c) for c, _ in self.pairs))

    def close(self) -> None:
        self._tmp.cleanup()

    def context_for(self, server_name: str | None) -> ssl.SSLContext:
        name = (server_name or "").lower().rstrip(".")
        if self._loaded:
            for loaded in self._loaded:
                if name in loaded.names:
                    return loaded.context
            for loaded in self._loaded:
                if any(covers(p, name) for p in loaded.names):
                    return loaded.context
            return self._default
        if name and self.ca is not None and self.may_issue(name):
            return self._issue(name)
        return self._default

    def _issue(self, name: str) -> ssl.SSLContext:
        ctx = self._issued.get(name)
        if ctx is not None:
            self._issued.move_to_end(name)
            return ctx
        assert self.ca is not None
        cert_pem, key_pem = self.ca.issue([name])
        base = Path(self._tmp.name) / f"{len(self._issued)}-{abs(hash(name))}"
        cert, key = base.with_suffix(".pem"), base.with_suffix(".key")
        cert.write_bytes(cert_pem)
        key.touch(0o600)
        key.write_bytes(key_pem)
        try:
            ctx = _context(cert, key, self.alpn)
        finally:
            key.unlink()
            cert.unlink()
        self._issued[name] = ctx
        while len(self._issued) > MAX_ISSUED:
            self._issued.popitem(last=False)
        return ctx

    def _on_sni(self, ssl_obj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                _ctx: ssl.SSLContext) -> int | None:
        try:
            chosen = self.context_for(server_name)
        except Exception:  # never fail a handshake from here: serve the default certificate
            log.exception("choosing a certificate for %r failed", server_name)
            chosen = self._default
        if chosen is not self.context:
            ssl_obj.context = chosen
        return None
