"""The edge's own responses: short status pages, HTML for browsers, plain text for curl."""

from __future__ import annotations

import html

from nbtunnel.core.http1 import reason

TITLES = {
    404: "Unknown hostname",
    502: "Bad gateway",
    524: "The origin did not answer in time",
    530: "The tunnel is not connected",
}


def wants_html(headers: list[tuple[bytes, bytes]]) -> bool:
    """Browsers get HTML; curl and other tools get plain text."""
    accept = b""
    agent = b""
    for name, value in headers:
        lname = name.lower()
        if lname == b"accept":
            accept = value
        elif lname == b"user-agent":
            agent = value
    if agent.startswith(b"curl/") or agent.startswith(b"Wget/"):
        return False
    return b"text/html" in accept


def error_page(
    status: int, detail: str, *, ray: str, as_html: bool
) -> tuple[bytes, bytes]:
    """(content type, body) for an edge-generated error."""
    title = TITLES.get(status, reason(status))
    if not as_html:
        text = f"{status} {title}\n{detail}\nRay ID: {ray} (nbtunnel edge)\n"
        return b"text/plain; charset=utf-8", text.encode()
    body = (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{status} | {html.escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;"
        "color:#222}code{background:#eee;padding:0 .3em}small{color:#777}</style></head>"
        f"<body><h1>{status} {html.escape(title)}</h1><p>{html.escape(detail)}</p>"
        f"<p><small>Ray ID: <code>{html.escape(ray)}</code> &middot; nbtunnel edge</small></p>"
        "</body></html>\n"
    )
    return b"text/html; charset=utf-8", body.encode()
