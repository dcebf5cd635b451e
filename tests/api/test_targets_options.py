"""What users type, parsed once for the CLI, the API and the magic."""

from __future__ import annotations

import pytest

from nbtunnel.api.errors import AddressError, TargetError
from nbtunnel.api.options import OptionError, TunnelOptions
from nbtunnel.api.targets import normalize_target, parse_host_port


@pytest.mark.parametrize(("text", "service"), [
    ("8888", "http://localhost:8888"), (8888, "http://localhost:8888"),
    ("localhost:3000", "http://localhost:3000"), ("http://127.0.0.1:9/", "http://127.0.0.1:9"),
    ("https://[::1]:8443", "https://[::1]:8443"), ("hello-world", "hello_world"),
    ("http_status:404", "http_status:404"), ("unix:/tmp/s.sock", "unix:/tmp/s.sock"),
    ("tcp://localhost:22", "tcp://localhost:22"),
])
def test_targets(text: str | int, service: str) -> None:
    assert normalize_target(text) == service


@pytest.mark.parametrize(("text", "message"), [
    ("notaport", "expected a port"), ("localhost", "expected a port"), ("-5", "out of range"),
    ("0", "out of range"), ("70000", "out of range"), ("ftp://x", "unsupported scheme 'ftp'"),
    ("http://localhost:8888/some/path", "no path"), ("http_status:abc", "http_status"),
    ("", "expected a port"), (True, "expected a port"),
])
def test_bad_targets_say_what_was_expected(text: str | bool, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        normalize_target(text)  # type: ignore[arg-type]


def test_host_port() -> None:
    assert parse_host_port("127.0.0.1:7844", 1) == ("127.0.0.1", 7844)
    assert parse_host_port("[::1]:9", 1) == ("::1", 9)
    assert parse_host_port("edge.example", 7844) == ("edge.example", 7844)
    for bad in ("", "a:b", "host:99999", "a b:1", "[::1"):
        with pytest.raises(AddressError):
            parse_host_port(bad, 1)


@pytest.mark.parametrize(("changes", "message"), [
    ({"ha_connections": 0}, "at least 1"), ({"protocol": "h3"}, "not one of quic"),
    ({"quic_backend": "x"}, "qh3"), ({"grace_period": 500}, "3m"), ({"timeout": 0}, "positive"),
    ({"http_host_header": "a b"}, "HOST"), ({"auth": "nocolon"}, "USER:PASSWORD"),
    ({"auth": ":pw"}, "USER:PASSWORD"),
])
def test_options_name_the_option(changes: dict[str, object], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        TunnelOptions(**changes).check()  # type: ignore[arg-type]


def test_good_options_pass() -> None:
    opts = TunnelOptions(protocol="http2", auth="token", http_host_header="localhost:8888")
    assert opts.check() is opts


@pytest.mark.parametrize(("argv", "message"), [
    (["tunnel", "--url", "notaport"], "expected a port"),
    (["tunnel", "--url", "8000", "--auth", "nocolon"], "USER:PASSWORD"),
    (["tunnel", "--url", "ftp://x"], "unsupported scheme"),
])
def test_cli_refuses_bad_targets_and_options(argv: list[str], message: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from nbtunnel.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err
