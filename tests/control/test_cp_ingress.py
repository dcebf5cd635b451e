"""config.yml ingress: matching, validation and the `ingress validate|rule` commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from nbtunnel.cli import main
from nbtunnel.connector.config_file import load_config
from nbtunnel.connector.ingress import Ingress, IngressError

CONFIG = """\
tunnel: 11111111-2222-3333-4444-555555555555
credentials-file: creds.json
originRequest:
  connectTimeout: 5s
ingress:
  - hostname: api.example.com
    path: ^/v1/
    service: http://127.0.0.1:8001
    originRequest:
      noTLSVerify: true
      httpHostHeader: internal.api
  - hostname: api.example.com
    service: unix:/tmp/api.sock
  - hostname: "*.example.com"
    service: https://127.0.0.1:8443
    originRequest: {connectTimeout: 1m30s}
  - hostname: tcp.example.org
    service: tcp://127.0.0.1:5432
  - hostname: hello.example.org
    service: hello_world
  - service: http_status:404
"""


@pytest.mark.parametrize(("url", "index"), [
    ("api.example.com/v1/users", 0),
    ("api.example.com:443/v1/", 0),
    ("api.example.com/v2/v1/", 1),  # the regex is anchored with ^
    ("api.example.com/", 1),
    ("a.example.com/v1/", 2),
    ("a.b.example.com/", 2),  # multi-level wildcard
    ("example.com/", 5),  # the apex is not matched by *.example.com
    ("tcp.example.org/", 3),
    ("hello.example.org/x", 4),
    ("other.net/", 5),
])
def test_matching_table(tmp_path: Path, url: str, index: int) -> None:
    (tmp_path / "config.yml").write_text(CONFIG)
    ingress = load_config(tmp_path / "config.yml").ingress
    assert ingress is not None
    host, _, path = url.partition("/")
    assert ingress.match(host, "/" + path)[0] == index


def test_origin_request_is_parsed_and_inherited(tmp_path: Path) -> None:
    (tmp_path / "config.yml").write_text(CONFIG)
    cfg = load_config(tmp_path / "config.yml")
    assert cfg.ingress is not None and cfg.credentials_file == str(tmp_path / "creds.json")
    r0, r2 = cfg.ingress.rules[0].origin, cfg.ingress.rules[2].origin
    assert r0.no_tls_verify and r0.http_host_header == "internal.api"
    assert r0.connect_timeout == 5.0  # top-level default
    assert r2.connect_timeout == 90.0 and not r2.no_tls_verify  # the rule's own value


@pytest.mark.parametrize(("rules", "message"), [
    ([{"hostname": "a.com", "service": "http://x"}], "last ingress rule must match all"),
    ([{"service": "http://x"}, {"service": "http_status:404"}], "#1 matches all URLs"),
    ([{"hostname": "a.*.com", "service": "http://x"}, {"service": "http_status:404"}],
     r"#1 \(hostname a\.\*\.com\): .*wildcard"),
    ([{"hostname": "a.com:80", "service": "http://x"}, {"service": "http_status:404"}],
     "must not contain a port"),
    ([{"hostname": "a.com", "service": "http://x/path"}, {"service": "http_status:404"}],
     "#1 .*no path"),
    ([{"hostname": "a.com", "path": "(", "service": "http://x"},
      {"service": "http_status:404"}], "#1 .*invalid path regex"),
    ([{"service": "http_status:99"}], "#1: invalid http_status"),
    ([{"hostname": "a.com"}, {"service": "http_status:404"}], "#1 .*missing service"),
    ([{"service": "http_status:404", "originRequest": {"connectTimeout": "soon"}}],
     "originRequest.connectTimeout: invalid duration"),
    ([{"service": "http_status:404", "originRequest": {"noTLSVerify": "yes"}}],
     "noTLSVerify must be true or false"),
])
def test_validation_names_the_rule(rules: list[dict[str, object]], message: str) -> None:
    with pytest.raises(IngressError, match=message):
        Ingress.from_rules(rules)


def test_unknown_keys_warn() -> None:
    ing = Ingress.from_rules([{"service": "http_status:404", "colour": "red",
                               "originRequest": {"frobnicate": 1, "tlsTimeout": "5s"}}])
    text = "\n".join(ing.warnings)
    assert "unknown key 'colour'" in text and "frobnicate: unknown key" in text
    assert "tlsTimeout is accepted but not applied" in text


def test_remote_json_durations_are_seconds() -> None:
    ing = Ingress.from_json(b'{"ingress":[{"service":"http_status:404",'
                            b'"originRequest":{"connectTimeout":7}}]}')
    assert ing.rules[0].origin.connect_timeout == 7.0


def test_ingress_commands_print_like_cloudflared(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "config.yml"
    cfg.write_text(CONFIG)
    assert main(["tunnel", "--config", str(cfg), "ingress", "validate"]) == 0
    assert capsys.readouterr().out == f"Validating rules from {cfg}\nOK\n"
    assert main(["tunnel", "--config", str(cfg), "ingress", "rule",
                 "https://a.example.com/x"]) == 0
    assert capsys.readouterr().out == (f"Using rules from {cfg}\nMatched rule #2\n"
                                       "\thostname: *.example.com\n"
                                       "\tservice: https://127.0.0.1:8443\n")
    cfg.write_text("ingress:\n  - hostname: a.com\n    service: http://x\n")
    assert main(["tunnel", "--config", str(cfg), "ingress", "validate"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"Validating rules from {cfg}\nValidation failed: The last ingress")
