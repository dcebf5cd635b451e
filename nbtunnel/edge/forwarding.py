"""Which request headers reach the connector, and which the edge adds.

Hop-by-hop fields (the fixed table and whatever `Connection` nominates) stay with the
visitor's connection, except Transfer-Encoding, which tells the connector a body follows.
Headers only the edge may set are stripped from visitors in any spelling (`Cf-Connecting-Ip`,
`cf_connecting_ip`): a client must never claim an address, a country or a ray.
`X-Forwarded-For` keeps every hop the visitor's request listed (all its fields, in order)
and gets the visitor's address appended.
"""

from __future__ import annotations

from nbtunnel.core.http1 import HOP_BY_HOP, connection_nominated

RESERVED = frozenset({
    "cf-connecting-ip", "cf-connecting-ipv6", "cf-ipcountry", "cf-ray", "cf-visitor",
    "cf-worker", "cf-ew-via", "cdn-loop", "true-client-ip", "x-forwarded-proto",
})
"""Request headers the edge owns (Cloudflare sets or rejects these; see docs/refusals.md).
Matched after lower-casing and mapping `_` to `-`."""

_NOT_FORWARDED = frozenset({"expect", "x-forwarded-for"})


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-")


def forwarded_headers(headers: list[tuple[bytes, bytes]], *, client_ip: str, ray: str,
                      scheme: str = "http") -> list[tuple[str, str]]:
    """The visitor's headers as the connector sees them, plus the edge's own."""
    # values keep their exact bytes through the metadata (non-UTF-8 ones as surrogate escapes)
    text = [(n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in headers]
    # Transfer-Encoding stays: cloudflared reads a body only when it sees chunked or a length
    drop = (HOP_BY_HOP - {"transfer-encoding"}) | connection_nominated(text) | _NOT_FORWARDED
    out: list[tuple[str, str]] = []
    chain: list[str] = []
    for name, value in text:
        lname = name.lower()
        if lname == "x-forwarded-for":
            chain += [hop.strip() for hop in value.split(",") if hop.strip()]
        if lname in drop or _canonical(name) in RESERVED:
            continue
        out.append((name, value))
    out.append(("Cf-Connecting-Ip", client_ip))
    out.append(("X-Forwarded-For", ", ".join([*chain, client_ip])))
    out.append(("X-Forwarded-Proto", scheme))
    out.append(("Cf-Visitor", f'{{"scheme":"{scheme}"}}'))
    out.append(("Cf-Ray", ray))
    return out
