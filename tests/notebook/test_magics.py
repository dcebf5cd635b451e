"""%load_ext nbtunnel and %tunnel in a real IPython shell (no kernel)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.testing import globalipapp
from IPython.utils.capture import capture_output

from nbtunnel.api.runtime import current_runtime
from tests.notebook.nbhelpers import fetch, nbtunnel_threads


@pytest.fixture(scope="module")
def shell() -> Any:
    # the module attribute, not an imported name: the first call starts the shell and
    # replaces it (another test module may have started it already)
    return globalipapp.get_ipython()


@pytest.fixture
def ip(shell: Any) -> Iterator[Any]:
    shell.run_line_magic("load_ext", "nbtunnel")
    try:
        yield shell
    finally:
        shell.run_line_magic("unload_ext", "nbtunnel")


def test_load_registers_and_unload_removes(shell: Any) -> None:
    assert "tunnel" not in shell.magics_manager.magics["line"]
    shell.run_line_magic("load_ext", "nbtunnel")
    assert "tunnel" in shell.magics_manager.magics["line"]
    assert current_runtime() is None  # loading starts nothing
    shell.run_line_magic("tunnel", "http_status:204")
    shell.run_line_magic("unload_ext", "nbtunnel")
    assert "tunnel" not in shell.magics_manager.magics["line"]
    assert current_runtime() is None and nbtunnel_threads() == []


def test_help_shows_argparse_usage(ip: Any) -> None:
    with capture_output() as out:
        ip.run_line_magic("pinfo", "%tunnel")
    text = out.stdout
    for word in ("--edge", "--cacert", "--quick-service", "--ha-connections", "--protocol",
                 "stop PORT|URL|all", "%tunnel 8888"):
        assert word in text, word


@pytest.mark.parametrize(("line", "message"), [
    ("", "needs a target"),
    ("--bogus 8888", "unrecognized arguments"),
    ("--ha-connections x 8888", "invalid int value"),
    ("--protocol h3 8888", "invalid choice"),
    ("--edge nowhere:port 8888", "expected HOST:PORT"),
    ("notaport", "expected a port"),
    ("-- -5", "out of range"),
    ("ftp://x", "unsupported scheme"),
    ("--auth nocolon 8888", "USER:PASSWORD"),
    ("8888 8888", "same target twice"),
    ("http://localhost:8888/some/path", "no path"),
    ("stop", "usage: %tunnel stop"),
    ("stop 1234", "no tunnel for '1234'"),
    ("list extra", "takes no arguments"),
    ("--ha-connections 0 8888", "at least 1"),
])
def test_bad_arguments_are_usage_errors(ip: Any, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("tunnel", line)
    # run_cell reports a UsageError as one line, without a traceback
    with capture_output() as out:
        result = ip.run_cell(f"%tunnel {line}")
    assert not result.success
    assert "UsageError" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr + out.stdout


def test_open_list_status_rerun_stop(ip: Any, origin_port: int) -> None:
    with capture_output() as out:
        result = ip.run_cell(f"t = %tunnel {origin_port}\nt")
    assert result.success, result.error_in_exec
    t = ip.user_ns["t"]
    assert "using the embedded local edge" in out.stdout
    assert t.status == "connected"
    assert fetch(t.front[1], t.hostname, "/x") == (200, "origin says /x")

    with capture_output() as out:
        again = ip.run_line_magic("tunnel", f"http://localhost:{origin_port}")
    assert again is t and "already open" in out.stdout

    hello = ip.run_line_magic("tunnel", "hello_world")
    with capture_output() as out:
        ip.run_line_magic("tunnel", "list")
    assert t.url in out.stdout and hello.url in out.stdout
    with capture_output() as out:
        ip.run_line_magic("tunnel", "status")
    assert "requests 1" in out.stdout and "#0 registered" in out.stdout

    with capture_output() as out:
        ip.run_line_magic("tunnel", f"stop {origin_port}")
    assert f"stopped {t.url}" in out.stdout and t.status == "stopped"
    ip.run_line_magic("tunnel", f"stop {hello.url}")
    assert hello.status == "stopped"
    with capture_output() as out:
        ip.run_line_magic("tunnel", "list")
    assert "no tunnels open" in out.stdout
    ip.run_line_magic("tunnel", "stop all")
    assert nbtunnel_threads() == []


def test_text_status_without_widget_front_end(ip: Any) -> None:
    with capture_output() as out:
        ip.run_cell("t2 = %tunnel http_status:200")
    t = ip.user_ns["t2"]
    shown = out.outputs[0].data  # what the magic displayed: text only outside a kernel
    assert set(shown) == {"text/plain"} and "[connected" in shown["text/plain"]
    bundle = t._repr_mimebundle_()
    assert set(bundle) == {"text/plain"}  # no kernel here: text only
    assert "[connected" in bundle["text/plain"] and t.url in bundle["text/plain"]


def test_hub_proxy_url(ip: Any, origin_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/alice/")
    with capture_output() as out:
        t = ip.run_line_magic("tunnel", str(origin_port))
    url = t.extra_urls["JupyterHub proxy"]
    assert url.startswith("/user/alice/proxy/") and url in out.stdout
    port = int(url.rstrip("/").rsplit("/", 1)[1])
    # what jupyter-server-proxy does: strip the prefix, keep its own Host header
    assert fetch(port, "hub.example.org", "/via-hub") == (200, "origin says /via-hub")


def test_tcp_service_prints_access_commands_that_work(ip: Any) -> None:
    """`%tunnel tcp PORT`: the printed nbtunnel command reaches the service as printed."""
    import asyncio
    import re
    import shlex
    import socketserver
    import threading

    from nbtunnel.access import connect

    class Echo(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            while data := self.request.recv(65536):
                self.request.sendall(data)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        with capture_output() as out:
            t = ip.run_line_magic("tunnel", f"tcp {port}")
        assert t.service == f"tcp://localhost:{port}"
        text = out.stdout
        assert f"cloudflared access tcp --hostname {t.hostname}" in text
        assert "ProxyCommand nbtunnel access ssh --hostname %h" in text
        line = next(x for x in text.splitlines() if "nbtunnel access tcp" in x)
        argv = shlex.split(line)
        opts = dict(zip(argv[3::2], argv[4::2], strict=False))
        assert opts["--hostname"] == t.hostname and re.match(r"127\.0\.0\.1:\d+", opts["--url"])

        async def roundtrip() -> bytes:
            reader, writer = await connect(opts["--hostname"],
                                           edge_address=opts["--edge-address"],
                                           edge_ca=opts["--edge-ca"])
            writer.write(b"from the printed command")
            data = await reader.readexactly(24)
            writer.close()
            return data

        assert asyncio.run(roundtrip()) == b"from the printed command"
        assert "nbtunnel access tcp" in t.summary()
    finally:
        server.shutdown()
        ip.run_line_magic("tunnel", "stop all")
