"""What each vantage point sees: registration and data streams decoded, the edge's headers."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from lab_helpers import has_mitmproxy, needs_mitmproxy
from nbtunnel_lab import Lab

from nbtunnel import __version__


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(public=has_mitmproxy(), origin_side=has_mitmproxy(), ha_connections=2) as lab:
        yield lab


def _settle(lab: Lab, ray: str, n: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while len(lab.flows().where(ray=ray)) < n and time.monotonic() < deadline:
        time.sleep(0.02)


def test_registration_is_decoded(lab: Lab) -> None:
    assert lab.quick is not None
    calls = [r for r in lab.flows(vantage="tunnel", kind="call")
             if r.fields.get("method") == "RegistrationServer.registerConnection"]
    assert sorted(r.conn_index for r in calls) == [0, 1]
    for rec in calls:
        assert rec.plane == "control" and rec.stream_id == 0 and rec.direction == "c2e"
        assert rec.fields["tunnel_id"] == str(lab.quick.credentials.tunnel_id)
        assert rec.fields["version"] == f"nbtunnel-{__version__}"
        assert str(rec.fields["secret"]).startswith("<redacted")
    details = lab.flows(vantage="tunnel", kind="return").where(direction="e2c")
    assert sum("connectionDetails" in r.summary for r in details) == 2


def test_one_data_stream_per_request(lab: Lab) -> None:
    paths = [f"/?n={i}" for i in range(5)]
    responses = [lab.request(p) for p in paths]
    assert [r.status for r in responses] == [200] * 5
    for path, resp in zip(paths, responses, strict=True):
        _settle(lab, resp.ray, 3)
        reqs = lab.flows(vantage="tunnel", kind="ConnectRequest", ray=resp.ray)
        assert len(reqs) == 1, reqs
        req = reqs[0]
        meta = dict(req.fields["metadata"])  # type: ignore[call-overload]
        assert req.plane == "data" and req.direction == "e2c" and req.stream_id != 0
        assert meta["HttpMethod"] == "GET" and str(req.fields["dest"]).endswith(path)
        answers = [r for r in lab.flows(vantage="tunnel", kind="ConnectResponse")
                   if (r.conn_index, r.stream_id) == (req.conn_index, req.stream_id)]
        assert len(answers) == 1 and answers[0].summary.startswith("ConnectResponse 200")
    assert "<table" in lab.flows()._repr_html_() and "ConnectRequest" in str(lab.flows())


@needs_mitmproxy
def test_public_and_origin_sides_show_the_edge_headers(lab: Lab) -> None:
    resp = lab.request("/headers-check")
    _settle(lab, resp.ray, 8)
    public = lab.flows(vantage="public", ray=resp.ray)
    origin = lab.flows(vantage="origin", ray=resp.ray)
    assert [r.kind for r in public] == ["request", "response"]
    assert public[0].fields["host"] == lab.hostname
    assert dict(public[1].fields["headers"])["Cf-Ray"] == resp.ray  # type: ignore[call-overload]
    seen = {k.lower(): v for k, v in origin[0].fields["headers"]}  # type: ignore[attr-defined]
    assert seen["cf-connecting-ip"] == "127.0.0.1"
    assert seen["x-forwarded-for"] == "127.0.0.1"
    assert seen["cf-ray"] == resp.ray
    assert [r.kind for r in origin] == ["request", "response"]


@needs_mitmproxy
def test_sequence_diagram_follows_one_request(lab: Lab) -> None:
    resp = lab.request("/sequence")
    _settle(lab, resp.ray, 8)
    diagram = lab.sequence(resp.ray)
    hops = [(src, dst) for _, src, dst, _, _ in diagram.steps()]
    assert hops[0] == ("client", "edge") and hops[-1] == ("edge", "client")
    for hop in [("edge", "connector"), ("connector", "origin"), ("origin", "connector"),
                ("connector", "edge")]:
        assert hop in hops
    svg = diagram.svg()
    assert svg.startswith("<svg") and "tunnel relay" in svg and "origin proxy" in svg
    assert lab.sequence(-1).ray == resp.ray
