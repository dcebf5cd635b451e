"""Unit tests of the connector's pure parts: backoff, credentials, ingress, CLI parsing."""

from __future__ import annotations

import argparse
import base64
import json
import random
import uuid
from pathlib import Path

import pytest

from nbtunnel.api.targets import normalize_target
from nbtunnel.cli.parser import build_parser, duration, host_port
from nbtunnel.connector.backoff import Backoff
from nbtunnel.connector.cloudflare import quick_box
from nbtunnel.connector.ingress import Ingress, IngressError
from nbtunnel.core.credentials import Credentials, CredentialsError
from nbtunnel.core.http1 import http_url
from nbtunnel.home import read_credentials_file

TID = uuid.UUID("11111111-2222-3333-4444-555555555555")


def test_backoff_doubles_is_capped_and_resets() -> None:
    b = Backoff(max_retries=3, rng=random.Random(7))
    ceilings = []
    for _ in range(6):
        ceilings.append(b.ceiling)
        delay = b.next_delay()
        assert 0 <= delay < ceilings[-1]
    assert ceilings == [1, 2, 4, 8, 8, 8]
    b.reset()
    assert b.ceiling == 1


def test_credentials_token_matches_cloudflared_format() -> None:
    creds = Credentials("0123456789abcdef0123456789abcdef", TID, b"x" * 32)
    doc = json.loads(base64.b64decode(creds.to_token()))
    assert doc == {"a": creds.account_tag, "t": str(TID),
                   "s": "eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHh4eHg="}
    assert Credentials.from_token(creds.to_token()) == creds
    with pytest.raises(CredentialsError, match="not valid"):
        Credentials.from_token("not-a-token")


def test_credentials_file_round_trip(tmp_path: Path) -> None:
    creds = Credentials("acct", TID, b"s" * 32)
    path = tmp_path / "c.json"
    path.write_text(creds.to_file_json())
    assert set(json.loads(path.read_text())) == {"AccountTag", "TunnelSecret", "TunnelID",
                                                 "Endpoint"}
    assert read_credentials_file(path) == creds
    path.write_text("{}")
    with pytest.raises(CredentialsError, match="invalid credentials file"):
        read_credentials_file(path)


def test_quick_result_vector() -> None:
    doc = json.loads(Path("tests/vectors/quick-tunnel-response.json").read_text())
    creds = Credentials.from_quick_result(doc["result"])
    assert creds.tunnel_id == uuid.UUID("22222222-3333-4444-5555-666666666666")
    assert creds.secret == b"q" * 32


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("probe.example", "/hello", 0),
        ("probe.example", "/other", 1),
        ("a.b.wild.example", "/", 2),
        ("wild.example", "/", 3),
        ("probe.example:8080", "/hello/x", 0),
        ("unknown", "/hello", 3),
    ],
)
def test_ingress_matching(host: str, path: str, expected: int) -> None:
    ing = Ingress.from_rules([
        {"hostname": "probe.example", "path": "^/hello", "service": "http://127.0.0.1:1"},
        {"hostname": "probe.example", "service": "http://127.0.0.1:2"},
        {"hostname": "*.wild.example", "service": "hello_world"},
        {"service": "http_status:404"},
    ])
    assert ing.match(host, path)[0] == expected


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([], "empty"),
        ([{"hostname": "a", "service": "http://x"}], "last ingress rule must match all"),
        ([{"service": "http://x/path"}], "no path"),
        ([{"service": "http_status:1000"}], "invalid http_status"),
        ([{"path": "(", "service": "http://x"}, {"service": "http_status:404"}], "regex"),
    ],
)
def test_ingress_validation_names_the_problem(rules: list[dict[str, object]],
                                              message: str) -> None:
    with pytest.raises(IngressError, match=message):
        Ingress.from_rules(rules)


def test_cli_parsers() -> None:
    assert duration("30s") == 30 and duration("1m30s") == 90 and duration("500ms") == 0.5
    assert duration("2") == 2
    with pytest.raises(argparse.ArgumentTypeError):
        duration("soon")
    assert host_port("127.0.0.1:7844") == ("127.0.0.1", 7844)
    assert host_port("[::1]:9") == ("::1", 9)
    assert host_port("edge.example") == ("edge.example", 7844)
    assert normalize_target("8000") == "http://localhost:8000"
    assert normalize_target("localhost:3000") == "http://localhost:3000"
    assert normalize_target("hello_world") == "hello_world"


def test_quick_box_is_aligned() -> None:
    for headline in ("Visit it at:", "a much longer headline than the URL below it, to wrap"):
        lines = quick_box("http://x.localhost:8080", headline=headline).splitlines()
        assert len({len(line) for line in lines}) == 1
        assert headline in lines[1] and "http://x.localhost:8080" in lines[2]
    assert "may take some time" in quick_box("https://a-b.trycloudflare.com")


def test_http_url_leaves_out_port_80() -> None:
    assert http_url("a.localhost", 80) == "http://a.localhost"
    assert http_url("a.localhost", 8080) == "http://a.localhost:8080"


def test_cli_protocol_choices() -> None:
    for value in ("quic", "http2", "auto"):
        args = build_parser().parse_args(["tunnel", "--url", "8000", "--protocol", value])
        assert args.protocol == value
