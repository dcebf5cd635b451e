"""`nbtunnel tunnel --url tcp://...` prints the access commands, and the printed command works
as is: a user copies it and reaches the TCP service (it used to print a `curl` hint, and the
suggested local port was the origin's own, already taken on this machine)."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import signal
import sys
from pathlib import Path

from tests.access.conftest import EchoServer


async def _spawn(*args: str, home: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NBTUNNEL_")}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nbtunnel", *args, env={**env, "NBTUNNEL_HOME": str(home)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)


async def _until(proc: asyncio.subprocess.Process, pattern: str, seen: list[str]) -> re.Match[str]:
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while line := (await proc.stdout.readline()).decode():
            seen.append(line)
            if m := re.search(pattern, line):
                return m
    raise AssertionError(f"process ended before {pattern!r}:\n" + "".join(seen))


async def _stop(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
    return await asyncio.wait_for(proc.wait(), 30)


async def test_printed_access_command_reaches_the_service(echo: EchoServer,
                                                         tmp_path: Path) -> None:
    seen: list[str] = []
    tunnel = await _spawn("tunnel", "--edge", "local", "--http-port", "0", "--url",
                          f"tcp://localhost:{echo.port}", home=tmp_path)
    access = None
    try:
        command = (await _until(tunnel, r"^\s+nbtunnel (access tcp .*)$", seen)).group(1)
        await _until(tunnel, r"Registered tunnel connection", seen)
        assert not any("curl" in line for line in seen), seen
        argv = shlex.split(command)
        port = int(argv[argv.index("--url") + 1].rsplit(":", 1)[1])
        assert port != echo.port and "--edge-address" in argv and "--edge-ca" in argv
        access = await _spawn(*argv, home=tmp_path)
        await _until(access, r"listening on", [])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"through the printed command")
        writer.write_eof()
        got = await asyncio.wait_for(reader.read(), 20)
        writer.close()
        assert got == b"through the printed command" + echo.tail
    finally:
        if access is not None:
            await _stop(access)
        assert await _stop(tunnel) == 0
