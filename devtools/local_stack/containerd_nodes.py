"""A real node, locally: containerd (with its own root, state and socket), the distribution
registry standing in for ECR (servers.Registry), and the node agent run exactly as the SSM
document deploys it. Used by the node tests,
the benchmarks and `make demo` (when it runs as root with Debian's containerd, docker-registry
and skopeo installed)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from devtools.local_stack import ssm_agent
from devtools.local_stack.servers import LocalStackError, Registry, stop_process
from devtools.local_stack.ssm_agent import Report
from devtools.local_stack.template_resolver import load

NODE_TOOLS = ("containerd", "ctr", "docker-registry", "skopeo")


def unavailable() -> str:
    """Why a real node cannot run here ("" if it can)."""
    if os.geteuid() != 0:
        return "containerd needs root"
    missing = [tool for tool in NODE_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (Debian packages containerd, docker-registry, skopeo)"
    return ""


def deployed_script(path: Path) -> Path:
    """The SSM document's script, byte for byte as template.yaml deploys it."""
    content = load()["Resources"]["PrefetchDocument"]["Properties"]["Content"]
    (script,) = content["mainSteps"][0]["inputs"]["runCommand"]
    path.write_text(script)
    path.chmod(0o700)
    return path


@dataclass
class Containerd:
    """containerd with a private root, state and socket (root may be a small tmpfs)."""

    base: Path
    root: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def socket(self) -> Path:
        return self.base / "containerd.sock"

    def start(self, timeout: float = 30) -> Containerd:
        self.base.mkdir(parents=True, exist_ok=True)
        self.root = self.root or self.base / "root"
        config = self.base / "config.toml"
        config.write_text(
            "version = 2\n"
            f'root = "{self.root}"\n'
            f'state = "{self.base / "state"}"\n'
            f'[grpc]\n  address = "{self.socket}"\n'
            f'[ttrpc]\n  address = "{self.socket}.ttrpc"\n'
            '[debug]\n  address = ""\n[metrics]\n  address = ""\n'
        )
        log = (self.base / "containerd.log").open("w")
        self.process = subprocess.Popen(["containerd", "--config", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalStackError(f"containerd exited; see {self.base / 'containerd.log'}")
            if self.socket.exists() and self.ctr("version", check=False).returncode == 0:
                return self
            time.sleep(0.1)
        raise LocalStackError("containerd did not answer within 30 s")

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
            capture_output=True, text=True, check=check,
        )  # fmt: skip

    def images(self) -> dict[str, dict[str, str]]:
        """Image name -> {digest, labels} in the k8s.io namespace."""
        lines = self.ctr("images", "ls").stdout.splitlines()[1:]
        found = {}
        for line in lines:
            parts = line.split()
            found[parts[0]] = {"digest": parts[2], "labels": parts[-1]}
        return found

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


def hosts_entry(hosts_dir: Path, name: str, upstream: str) -> None:
    """Registry configuration as a node has it (containerd's config_path): pulls of `name` go to
    the plain-HTTP `upstream`."""
    directory = hosts_dir / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.toml").write_text(
        f'server = "http://{upstream}"\n[host."http://{upstream}"]\n  capabilities = ["pull", "resolve"]\n'
    )


def fake_aws_cli(bin_dir: Path, token: str) -> Path:
    """A stand-in for the AWS CLI on a node: `aws ecr get-login-password` prints the token the
    node's role would get (read from a file, so it is on no command line either)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "token").write_text(token)
    script = bin_dir / "aws"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1 $2" = "ecr get-login-password" ] || { echo "unexpected: $*" >&2; exit 9; }\n'
        f'cat "{bin_dir / "token"}"\n'
    )
    script.chmod(0o755)
    return bin_dir


def run_agent(
    script: Path,
    containerd: Containerd,
    parameters: dict[str, str],
    *,
    hosts_dir: Path | None = None,
    path_prefix: list[Path] | None = None,
    execution_timeout: float = 600,
    tmp_dir: Path | None = None,
    node_settings: dict[str, str] | None = None,
) -> Report:
    """Run the document's script as the SSM agent would (ssm_agent.py): `sh -c <script>` in its
    own process group, parameters only as SSM_<name> environment variables, SIGKILL at
    `execution_timeout`; the result is what the agent reports (output cut, its own stderr line
    on a non-zero exit). The node's settings (containerd's socket and root, the registry hosts
    directory) are the agent service's environment, as a systemd drop-in would set them."""
    env = {
        "PATH": ":".join([*(str(p) for p in path_prefix or []), os.environ.get("PATH", "/usr/bin:/bin")]),
        "HOME": "/root",
        "CONTAINERD_ADDRESS": str(containerd.socket),
        "PREFETCH_CONTAINERD_ROOT": str(containerd.root),
        "TMPDIR": str(tmp_dir or tempfile.gettempdir()),
        **({"PREFETCH_HOSTS_DIR": str(hosts_dir)} if hosts_dir else {}),
        **(node_settings or {}),
        **{f"SSM_{name}": value for name, value in parameters.items() if name != "executionTimeout"},
    }
    return ssm_agent.report(ssm_agent.run_script(script, env, execution_timeout))


ECR_DEMO_REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


@dataclass
class LocalNodes:
    """Real nodes for the node simulator: one containerd per simulated node (started on its
    first command), a registry that asks for an ECR-style login and stands in for the account's
    ECR registry (the nodes' registry configuration sends ECR pulls there), and a stand-in AWS
    CLI that gives the nodes the login token, as a node's role would. Each command runs the
    document's script exactly as deployed."""

    base: Path
    token: str = "local-ecr-token-0123456789abcdef0123456789abcdef"  # noqa: S105 - the local registry's only
    registry: Registry | None = None
    nodes: dict[str, Containerd] = field(default_factory=dict)

    def start(self) -> LocalNodes:
        self.base.mkdir(parents=True, exist_ok=True)
        self.script = deployed_script(self.base / "prefetch.sh")
        self.registry = Registry(self.base / "registry", password=self.token).start()
        self.hosts_dir = self.base / "certs.d"
        hosts_entry(self.hosts_dir, ECR_DEMO_REGISTRY, self.registry.host)
        self.bin_dir = fake_aws_cli(self.base / "bin", self.token)
        return self

    def push(self, repository: str, files: dict[str, bytes], tag: str) -> str:
        """Build an image and push it as <ECR registry>/<repository>:<tag>; returns its digest."""
        from devtools.local_stack import oci_images

        assert self.registry is not None
        layout = self.base / "layouts" / repository.replace("/", "_")
        built = oci_images.build(layout, files)
        oci_images.push(layout, f"{self.registry.host}/{repository}:{tag}", credentials=self.registry.credentials)
        return built.digest

    def containerd(self, instance_id: str) -> Containerd:
        if instance_id not in self.nodes:
            # Short paths: a unix socket path must stay under 108 bytes.
            self.nodes[instance_id] = Containerd(Path(tempfile.mkdtemp(prefix="ctd-", dir="/tmp"))).start()
        return self.nodes[instance_id]

    def run(self, instance_id: str, parameters: dict[str, str]) -> Report:
        return run_agent(
            self.script, self.containerd(instance_id), parameters, hosts_dir=self.hosts_dir,
            path_prefix=[self.bin_dir], execution_timeout=float(parameters.get("executionTimeout", 3600)),
        )  # fmt: skip

    def stop(self) -> None:
        for containerd in self.nodes.values():
            containerd.stop()
            shutil.rmtree(containerd.base, ignore_errors=True)
        self.nodes.clear()
        if self.registry is not None:
            self.registry.stop()
