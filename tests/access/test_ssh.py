"""Real OpenSSH through a tunnel: Debian's sshd on a free port (throw-away host key, one
authorized test key), the real `ssh`/`scp` with `nbtunnel access ssh` as ProxyCommand, over
QUIC and HTTP/2 connectors and the edge's HTTPS front; plus `nbtunnel access tcp` as a local
listener in front of a TCP echo server."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.access.conftest import EchoServer, StartTunnel
from tests.scale.services import free_port

SSHD = "/usr/sbin/sshd"
SSH = shutil.which("ssh")
SCP = shutil.which("scp")
KEYGEN = shutil.which("ssh-keygen")
# the real command line: the venv's `nbtunnel access`, as a user types it
_ENTRY = Path(sys.executable).with_name("nbtunnel")
ACCESS = [str(_ENTRY), "access"] if _ENTRY.exists() else [sys.executable, "-m", "nbtunnel",
                                                          "access"]
MB = 1024 * 1024


@dataclass
class Sshd:
    port: int
    key: Path  # the client's private key
    user: str


async def _run(*cmd: str, timeout: float = 120) -> tuple[int, bytes, bytes]:
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out, err


HAVE_OPENSSH = os.path.exists(SSHD) and bool(SSH and SCP and KEYGEN)


def _sshd_dir(d: Path) -> int:
    """Keys, authorized_keys and sshd_config in `d`; returns the port sshd will use."""
    d.mkdir()
    for name in ("host_key", "client_key"):
        assert KEYGEN is not None
        import subprocess

        subprocess.run([KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True, capture_output=True)
    (d / "authorized_keys").write_bytes((d / "client_key.pub").read_bytes())
    os.chmod(d / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    port = free_port()
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
        f"PidFile {d / 'sshd.pid'}\nAuthorizedKeysFile {d / 'authorized_keys'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "Subsystem sftp internal-sftp\nLogLevel ERROR\n")
    return port


@pytest.fixture
async def sshd(tmp_path: Path) -> AsyncIterator[Sshd]:
    if not HAVE_OPENSSH:
        pytest.skip("openssh-server/openssh-client not installed (./dev test installs them "
                    "with apt-get when it can)")
    d = tmp_path / "sshd"
    port = _sshd_dir(d)
    proc = await asyncio.create_subprocess_exec(
        SSHD, "-D", "-e", "-f", str(d / "sshd_config"),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    try:
        for _ in range(500):  # wait until it listens (it has no readiness signal)
            try:
                _, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                if proc.returncode is not None:
                    assert proc.stderr is not None
                    pytest.fail(f"sshd exited: {(await proc.stderr.read()).decode()}")
                await asyncio.sleep(0.02)
        else:
            pytest.fail(f"sshd did not listen on port {port} within 10 s")
        import pwd

        yield Sshd(port, d / "client_key", pwd.getpwuid(os.geteuid()).pw_name)
    finally:
        if proc.returncode is None:
            proc.terminate()
            await proc.wait()


def _ssh_options(t: object, sshd: Sshd) -> list[str]:
    edge = t.edge  # type: ignore[attr-defined]
    host, port = edge.https_address
    proxy = " ".join([*ACCESS, "ssh", "--hostname", "%h", "--edge-address", f"{host}:{port}",
                      "--edge-ca", str(edge.ca_path)])
    return ["-F", "/dev/null", "-i", str(sshd.key), "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", f"ProxyCommand={proxy}"]


@pytest.mark.parametrize("protocol", ["quic", "http2"])
async def test_ssh_command_and_scp_20mb(start: StartTunnel, sshd: Sshd, tmp_path: Path,
                                        protocol: str) -> None:
    t = await start(f"ssh://127.0.0.1:{sshd.port}", protocol)
    opts = _ssh_options(t, sshd)
    target = f"{sshd.user}@{t.hostname}"
    code, out, err = await _run(SSH or "ssh", *opts, target, "echo hello-over-the-tunnel; "
                                "echo $SSH_CONNECTION")
    assert code == 0, err.decode()
    assert out.splitlines()[0] == b"hello-over-the-tunnel"
    assert out.splitlines()[1].split()[2] == b"127.0.0.1"  # the connector dialed sshd locally
    payload = os.urandom(20 * MB)
    src, dst, back = tmp_path / "up.bin", tmp_path / "remote.bin", tmp_path / "down.bin"
    src.write_bytes(payload)
    code, _, err = await _run(SCP or "scp", *opts, str(src), f"{target}:{dst}", timeout=300)
    assert code == 0, err.decode()
    assert hashlib.sha256(dst.read_bytes()).digest() == hashlib.sha256(payload).digest()
    code, _, err = await _run(SCP or "scp", *opts, f"{target}:{dst}", str(back), timeout=300)
    assert code == 0, err.decode()
    assert hashlib.sha256(back.read_bytes()).digest() == hashlib.sha256(payload).digest()


async def test_access_tcp_listener_echo(start: StartTunnel, echo: EchoServer) -> None:
    t = await start(f"tcp://{echo.address}")
    host, port = t.edge.https_address
    proc = await asyncio.create_subprocess_exec(
        *ACCESS, "tcp", "--hostname", t.hostname, "--url", "127.0.0.1:0",
        "--edge-address", f"{host}:{port}", "--edge-ca", str(t.edge.ca_path),
        stderr=asyncio.subprocess.PIPE)
    assert proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stderr.readline(), 30)
        m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", line)
        assert m, line
        local = int(m.group(1))
        for i in range(3):  # one WebSocket per accepted connection
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            payload = os.urandom(256 * 1024) + b"%d" % i
            writer.write(payload)
            writer.write_eof()
            assert await asyncio.wait_for(reader.read(), 30) == payload + echo.tail
            writer.close()
        assert echo.connections == ["eof", "eof", "eof"]
    finally:
        proc.terminate()
        code = await asyncio.wait_for(proc.wait(), 10)
    assert code == 0
