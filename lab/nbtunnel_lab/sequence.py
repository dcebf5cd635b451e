"""One request's life across the vantage points, drawn as an SVG sequence diagram.

Records sharing a ray id (the ``Cf-Ray`` the edge stamps on the request, the ConnectRequest and
the response) become arrows between lifelines; the dot on each arrow marks the vantage point
that saw it. Learners would rather look than read a table.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from nbtunnel_lab.records import Record

LIFELINES = ("client", "public proxy", "edge", "tunnel relay", "connector", "origin proxy",
             "origin")
_VANTAGE_AT = {"public": "public proxy", "tunnel": "tunnel relay", "origin": "origin proxy",
               "connector": "connector", "lab": "tunnel relay"}
# (vantage, direction) -> (from, to)
_ARROWS = {("public", "request"): ("client", "edge"), ("public", "response"): ("edge", "client"),
           ("tunnel", "e2c"): ("edge", "connector"), ("tunnel", "c2e"): ("connector", "edge"),
           ("origin", "request"): ("connector", "origin"),
           ("origin", "response"): ("origin", "connector")}
LANE, ROW, TOP = 120, 30, 50


class SequenceError(LookupError):
    """No request with that ray id or index was recorded."""


def pick_ray(records: Sequence[Record], ray_or_index: str | int) -> str:
    """A ray id as given, or the n-th request's ray (in time order; -1 is the latest)."""
    rays: list[str] = []
    for rec in sorted(records, key=lambda r: r.time):
        if rec.ray and rec.kind in ("request", "ConnectRequest") and rec.ray not in rays:
            rays.append(rec.ray)
    if isinstance(ray_or_index, str):
        if ray_or_index not in rays:
            raise SequenceError(f"no request with ray {ray_or_index!r} ({len(rays)} recorded)")
        return ray_or_index
    try:
        return rays[ray_or_index]
    except IndexError:
        raise SequenceError(f"request #{ray_or_index} not recorded ({len(rays)} so far)") from None


class SequenceDiagram:
    """``_repr_html_`` (the SVG) in a notebook, ``svg()`` for a file, ``str()`` as text."""

    def __init__(self, ray: str, records: Sequence[Record]) -> None:
        self.ray = ray
        self.records = sorted(records, key=lambda r: r.time)
        self.t0 = self.records[0].time if self.records else 0.0
        seen = {_VANTAGE_AT.get(r.vantage, "") for r in self.records}
        self.lifelines = [n for n in LIFELINES if ("proxy" not in n and "relay" not in n)
                          or n in seen]

    def steps(self) -> list[tuple[float, str, str, str, str]]:
        """(ms since the first record, from, to, observed at, label) per arrow."""
        out = []
        for rec in self.records:
            src, dst = _ARROWS.get((rec.vantage, rec.direction), ("", ""))
            at = _VANTAGE_AT.get(rec.vantage, "")
            if not src:
                src = dst = at
            out.append(((rec.time - self.t0) * 1000, src, dst, at, rec.summary))
        return out

    def __str__(self) -> str:
        lines = [f"request {self.ray}"]
        for ms, src, dst, at, label in self.steps():
            lines.append(f"{ms:8.1f} ms  {src:>12} -> {dst:<12} [{at}] {label}")
        return "\n".join(lines)

    def svg(self) -> str:
        x = {name: LANE // 2 + i * LANE for i, name in enumerate(self.lifelines)}
        steps = self.steps()
        width = LANE * len(self.lifelines)
        height = TOP + ROW * (len(steps) + 1)
        parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
                 f"font-family='sans-serif' font-size='11'>",
                 "<defs><marker id='nbt-arrow' markerWidth='8' markerHeight='8' refX='8' "
                 "refY='4' orient='auto'><path d='M0,0 L8,4 L0,8 z' fill='#333'/></marker>"
                 "</defs>",
                 f"<title>request {html.escape(self.ray)}</title>"]
        for name, cx in x.items():
            parts.append(f"<text x='{cx}' y='20' text-anchor='middle' font-weight='bold'>"
                         f"{html.escape(name)}</text>")
            parts.append(f"<line x1='{cx}' y1='28' x2='{cx}' y2='{height - 5}' stroke='#bbb' "
                         "stroke-dasharray='4 3'/>")
        for i, (ms, src, dst, at, label) in enumerate(steps):
            y = TOP + ROW * i + 12
            x1, x2 = x.get(src, 0), x.get(dst, 0)
            left = min(x1, x2)
            full = f"{ms:.0f} ms  {label}"
            room = max(14, int(abs(x2 - x1) / 6.2))  # ~6.2 px per character at this size
            short = full if len(full) <= room else full[: room - 1] + "\u2026"
            parts.append(f"<text x='{left + 4}' y='{y - 4}'><title>{html.escape(full)}</title>"
                         f"{html.escape(short)}</text>")
            if x1 != x2:
                parts.append(f"<line x1='{x1}' y1='{y}' x2='{x2}' y2='{y}' stroke='#333' "
                             "marker-end='url(#nbt-arrow)'/>")
            if at in x:
                parts.append(f"<circle cx='{x[at]}' cy='{y}' r='4' fill='#e8710a'/>")
        parts.append("</svg>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return f"<div class='nbtunnel-lab-sequence'>{self.svg()}</div>"

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.svg())
