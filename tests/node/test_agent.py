"""The node agent, exactly as the SSM document deploys it, against a real containerd and a real
registry."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from prefetcher import refs

from devtools.local_stack import containerd_nodes, oci_images, servers, ssm_agent
from devtools.local_stack.template_resolver import load
from tests.node.conftest import Pushed, results
from tests.node.proxy import FaultyProxy

pytestmark = pytest.mark.node  # a real containerd and registry (needs root)

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def fatal_reason(stdout: str) -> str:
    """The agent's one `{"fatal": ...}` line: the only line of a run that could pull nothing."""
    (line,) = stdout.splitlines()
    loaded = json.loads(line)
    assert set(loaded) == {"fatal"}, line
    return str(loaded["fatal"])


def item(registry: servers.Registry, image: Pushed, tag: str = "v1") -> str:
    return f"{registry.host}/{image.repository}:{tag}@{image.digest}"


# ---- 2. pulls -------------------------------------------------------------------------------


def test_pulls_by_digest_into_k8s_io_and_the_tag_resolves(run, registry, pushed, containerd):
    small = pushed["small"]
    outcome, (line,) = run([item(registry, small)])
    assert outcome.response_code == 0, outcome.stderr
    pinned = f"{registry.host}/ml/small@{small.digest}"
    assert (line.image, line.digest, line.tag, line.outcome) == (pinned, small.digest, "v1", "pulled")
    assert line.bytes >= small.size and line.seconds > 0 and line.error == ""
    found = containerd.images()
    # Both names point to the pushed digest, and the CRI plugin (the kubelet's view) manages them
    for name in (pinned, f"{registry.host}/ml/small:v1"):
        assert found[name]["digest"] == small.digest
        assert "io.cri-containerd.image=managed" in found[name]["labels"]
        assert "eks-image-prefetcher/pulled=true" in found[name]["labels"]
    check = containerd.ctr("images", "check", f"name=={pinned}").stdout
    assert "complete" in check and check.split()[-1] == "true"


def test_an_image_already_present_is_skipped_without_the_registry(run, registry, pushed, containerd, tmp_path):
    small = pushed["small"]
    run([item(registry, small)])
    # The registry is no longer reachable for this node: a present image needs no call to it
    unreachable = tmp_path / "unreachable.d"
    containerd_nodes.hosts_entry(unreachable, registry.host, f"127.0.0.1:{servers.free_port()}")
    outcome, (line,) = run([item(registry, small)], hosts=unreachable)
    assert outcome.response_code == 0 and line.outcome == "present"
    assert line.bytes == small.size + len(containerd.ctr("content", "get", _config_digest(containerd, small)).stdout)


def _config_digest(containerd: containerd_nodes.Containerd, image: Pushed) -> str:
    manifest = json.loads(containerd.ctr("content", "get", image.digest).stdout)
    return str(manifest["config"]["digest"])


def test_an_image_the_kubelet_pulled_by_tag_is_present_and_gets_its_digest_name(
    run, registry, pushed, containerd, hosts_dir
):
    # Given the kubelet pulled the image under its tag only
    small = pushed["small"]
    containerd.ctr("images", "pull", "--hosts-dir", str(hosts_dir), f"{registry.host}/ml/small:v1")
    assert f"{registry.host}/ml/small@{small.digest}" not in containerd.images()
    # Then the agent finds it present and names it by digest without pulling
    outcome, (line,) = run([item(registry, small)])
    assert outcome.response_code == 0 and line.outcome == "present", outcome.stderr
    assert containerd.images()[f"{registry.host}/ml/small@{small.digest}"]["digest"] == small.digest


def test_images_pull_in_parallel_within_the_bound(run, registry, pushed, containerd, tmp_path):
    # A stand-in ctr on PATH records when each real pull starts and ends, then runs the real ctr
    shim = tmp_path / "shim"
    shim.mkdir()
    record = tmp_path / "pulls.log"
    real = subprocess.run(["sh", "-c", "command -v ctr"], capture_output=True, text=True, check=True).stdout.strip()
    (shim / "ctr").write_text(
        "#!/bin/bash\n"
        f'case " $* " in *" images pull "*) echo "start $(date +%s.%N)" >> {record};'
        f' {real} "$@"; code=$?; echo "end $(date +%s.%N)" >> {record}; exit $code;; esac\n'
        f'exec {real} "$@"\n'
    )
    (shim / "ctr").chmod(0o755)
    batch = [item(registry, pushed[f"par{i}"]) for i in range(4)]
    outcome, lines = run(batch, Parallelism=2, path_prefix=[shim])
    assert outcome.response_code == 0, outcome.stderr
    assert [line.outcome for line in lines] == ["pulled"] * 4
    events = sorted((float(t), kind) for kind, t in (line.split() for line in record.read_text().splitlines()))
    running = peak = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2


def test_a_tag_that_containerd_refuses_fails_with_containerds_own_reason(run, registry, pushed, tmp_path):
    # Given a ctr that pulls as the real one does but refuses every tag with a reason
    shim = tmp_path / "shim"
    shim.mkdir()
    real = subprocess.run(["sh", "-c", "command -v ctr"], capture_output=True, text=True, check=True).stdout.strip()
    (shim / "ctr").write_text(
        "#!/bin/bash\n"
        'case " $* " in *" images tag "*) echo "ctr: image name is reserved by policy" >&2; exit 1;; esac\n'
        f'exec {real} "$@"\n'
    )
    (shim / "ctr").chmod(0o755)
    # When the agent pulls a tagged image
    outcome, (line,) = run([item(registry, pushed["other"])], path_prefix=[shim])
    # Then the image fails, and the reason is containerd's own last line, not an empty one
    assert outcome.response_code == 1 and line.outcome == "failed", outcome.stderr
    assert line.error.startswith("tagging ") and line.error.endswith("failed: image name is reserved by policy")


def test_a_transient_registry_error_is_retried(script, containerd, registry, pushed, tmp_path):
    with FaultyProxy(registry.host, failures=2) as proxy:
        hosts = tmp_path / "faulty.d"
        containerd_nodes.hosts_entry(hosts, registry.host, proxy.host)
        outcome = containerd_nodes.run_agent(
            script, containerd, {"Images": item(registry, pushed["other"])}, hosts_dir=hosts
        )
    (line,) = results(outcome.stdout)
    assert outcome.response_code == 0 and line.outcome == "pulled", outcome.stderr
    assert "transient registry error" in outcome.stderr
    assert [status for _, _, status in proxy.requests].count(503) == 2


def test_not_found_is_final_and_not_retried(run, registry):
    missing = f"{registry.host}/ml/missing:v1@sha256:{'0' * 64}"
    outcome, (line,) = run([missing])
    assert outcome.response_code == 1 and line.outcome == "failed"
    assert "not found" in line.error
    assert "transient" not in outcome.stderr


def test_a_pull_that_exceeds_its_timeout_fails_with_that_reason(script, containerd, registry, pushed, tmp_path):
    with FaultyProxy(registry.host, stall_blobs=30) as proxy:
        hosts = tmp_path / "slow.d"
        containerd_nodes.hosts_entry(hosts, registry.host, proxy.host)
        parameters = {"Images": item(registry, pushed["other"]), "PullTimeoutSeconds": "10"}
        started = time.monotonic()
        outcome = containerd_nodes.run_agent(script, containerd, parameters, hosts_dir=hosts)
    (line,) = results(outcome.stdout)
    assert outcome.response_code == 1 and line.outcome == "failed"
    assert line.error == "the pull took longer than PullTimeoutSeconds (10 s)"
    assert time.monotonic() - started < 28


def test_a_multi_arch_image_resolves_to_the_nodes_platform(run, registry, pushed, containerd):
    multi = pushed["multi"]
    outcome, (line,) = run([item(registry, multi)])
    assert outcome.response_code == 0 and line.outcome == "pulled"
    index = json.loads(containerd.ctr("content", "get", multi.digest).stdout)
    by_arch = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    assert containerd.ctr("content", "get", by_arch[oci_images.ARCH], check=False).returncode == 0
    other = json.loads(images_manifest(registry, multi.repository, by_arch[oci_images.OTHER_ARCH]))
    # The other platform's layer was never downloaded
    assert containerd.ctr("content", "get", other["layers"][0]["digest"], check=False).returncode != 0
    assert line.bytes == multi.size + len(
        containerd.ctr("content", "get", _config_of(containerd, by_arch[oci_images.ARCH])).stdout
    )


def _config_of(containerd: containerd_nodes.Containerd, manifest_digest: str) -> str:
    return str(json.loads(containerd.ctr("content", "get", manifest_digest).stdout)["config"]["digest"])


def images_manifest(registry: servers.Registry, repository: str, digest: str) -> str:
    import urllib.request

    request = urllib.request.Request(
        f"http://{registry.host}/v2/{repository}/manifests/{digest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - loopback
        return str(answer.read().decode())


# ---- 3. disk guard --------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path):
    """containerd whose root is a 48 MiB tmpfs."""
    mount = Path(tempfile.mkdtemp(prefix="ctd-tmpfs-", dir="/tmp"))
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)], check=True)
    base = Path(tempfile.mkdtemp(prefix="ctd-", dir="/tmp"))
    started = containerd_nodes.Containerd(base, root=mount / "root").start()
    try:
        yield started
    finally:
        started.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)
        shutil.rmtree(base, ignore_errors=True)
        mount.rmdir()


def test_an_image_that_would_not_fit_is_skipped_and_says_how_much_is_missing(
    script, small_disk, registry, pushed, hosts_dir
):
    big, small = pushed["big"], pushed["small"]
    parameters = {"Images": f"{item(registry, big)},{item(registry, small)}", "MinFreeDiskMiB": "8"}
    outcome = containerd_nodes.run_agent(script, small_disk, parameters, hosts_dir=hosts_dir)
    skipped, pulled = results(outcome.stdout)
    assert outcome.response_code == 0  # a skip is not a failure
    assert skipped.outcome == "skipped-disk"
    match = re.fullmatch(
        r"needs about (\d+) MiB \(layers and unpacking\), (\d+) MiB free on (\S+), MinFreeDiskMiB 8: missing (\d+) MiB",
        skipped.error,
    )
    assert match, skipped.error
    need, free, root, missing = int(match[1]), int(match[2]), match[3], int(match[4])
    assert root == str(small_disk.root) and need >= 3 * 24 and missing == 8 + need - free > 0
    # Nothing of the big image was written; the small one fits and is pulled
    assert not any(name.startswith(f"{registry.host}/ml/big") for name in small_disk.images())
    assert pulled.outcome == "pulled"


# ---- 4. registry auth -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def private_registry(node_base: Path, pushed: dict[str, Pushed]) -> tuple[servers.Registry, Pushed]:
    """A registry that wants `AWS:<token>` (as ECR does), holding one image."""
    started = servers.Registry(node_base / "private", password="tok-" + "x7" * 30).start()
    oci_images.push(node_base / "layouts" / "small", f"{started.host}/ml/secure:v1", credentials=started.credentials)
    yield started, Pushed("ml/secure", pushed["small"].digest, pushed["small"].size)
    started.stop()


@pytest.fixture
def ecr_hosts(tmp_path: Path, private_registry) -> Path:
    """The node's registry configuration sends the ECR registry's pulls to the private registry."""
    directory = tmp_path / "ecr.d"
    containerd_nodes.hosts_entry(directory, ECR, private_registry[0].host)
    return directory


def test_ecr_credentials_from_the_node_never_appear_on_a_command_line_or_in_output(
    script, containerd, private_registry, ecr_hosts, tmp_path
):
    registry, secure = private_registry
    token = registry.password
    bin_dir = containerd_nodes.fake_aws_cli(tmp_path / "bin", token)
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if token in text or node_base64(token) in text:
                    seen.append(text)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        parameters = {"Images": f"{ECR}/ml/secure:v1@{secure.digest}"}
        outcome = containerd_nodes.run_agent(script, containerd, parameters, hosts_dir=ecr_hosts, path_prefix=[bin_dir])
    finally:
        stop.set()
        watcher.join()
    (line,) = results(outcome.stdout)
    assert outcome.response_code == 0 and line.outcome == "pulled", outcome.stderr
    assert seen == []
    assert token not in outcome.stdout + outcome.stderr and node_base64(token) not in outcome.stdout + outcome.stderr
    assert f"{ECR}/ml/secure:v1" in containerd.images()


def node_base64(token: str) -> str:
    import base64

    return base64.b64encode(f"AWS:{token}".encode()).decode()


def test_a_refused_credential_reaches_the_result_line(script, containerd, private_registry, ecr_hosts, tmp_path):
    _, secure = private_registry
    bin_dir = containerd_nodes.fake_aws_cli(tmp_path / "bin", "expired-token")
    outcome = containerd_nodes.run_agent(script, containerd, {"Images": f"{ECR}/ml/secure:v1@{secure.digest}"},
                             hosts_dir=ecr_hosts, path_prefix=[bin_dir])  # fmt: skip
    (line,) = results(outcome.stdout)
    assert outcome.response_code == 1 and line.outcome == "failed"
    assert "401 Unauthorized" in line.error
    assert "transient" not in outcome.stderr


def test_without_any_credential_source_the_pull_is_anonymous_and_refused_readably(
    script, containerd, private_registry, ecr_hosts, tmp_path
):
    _, secure = private_registry
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    environment_path = os.environ["PATH"]
    os.environ["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"  # no aws CLI, no credential provider
    try:
        outcome = containerd_nodes.run_agent(script, containerd, {"Images": f"{ECR}/ml/secure:v1@{secure.digest}"},
                                 hosts_dir=ecr_hosts, path_prefix=[empty])  # fmt: skip
    finally:
        os.environ["PATH"] = environment_path
    (line,) = results(outcome.stdout)
    assert line.outcome == "failed" and "401 Unauthorized" in line.error
    assert "no ECR credentials" in outcome.stderr


def test_a_public_registry_needs_no_credentials(run, registry, pushed):
    outcome, (line,) = run([item(registry, pushed["other"])])
    assert outcome.response_code == 0 and line.outcome == "pulled"


# ---- 5. result contract ---------------------------------------------------------------------


def test_one_line_per_image_and_the_exit_code_says_if_any_failed(run, registry, pushed):
    missing = f"{registry.host}/ml/missing:v1@sha256:{'1' * 64}"
    batch = [item(registry, pushed["small"]), missing, item(registry, pushed["other"])]
    outcome, lines = run(batch)
    # One line per image, in the order they finished
    outcomes = {line.image.split("@")[0].rsplit("/", 1)[1]: line.outcome for line in lines}
    assert outcomes == {"small": "pulled", "missing": "failed", "other": "pulled"}
    assert outcome.response_code == 1
    assert len(outcome.stdout.splitlines()) == 3
    # and no line is longer than the senders allow for (prefetcher.commands)
    from prefetcher import commands

    for raw, line in zip(outcome.stdout.splitlines(), lines, strict=True):
        image = refs.ImageRef.parse_agent_item(line.image.replace("@", f":{line.tag}@"))
        assert len(raw.encode()) + 1 <= commands.line_bound(image)


# ---- 6. cleanup -----------------------------------------------------------------------------


def test_cleanup_removes_only_superseded_digests_it_pulled_that_nothing_uses(
    run, registry, pushed, containerd, hosts_dir, node_base
):
    host = registry.host
    digests = {}
    for name in ("par0", "par1", "par2"):
        oci_images.push(node_base / "layouts" / name, f"{host}/ml/app:{name}")
        digests[name] = pushed[name].digest
    old, used, new = (f"{host}/ml/app:v1@{digests[n]}" for n in ("par0", "par1", "par2"))
    # Given ml/app:v1 was pulled at one digest, then moved to a second one that a container uses
    run([old])
    run([used])
    containerd.ctr("containers", "create", f"{host}/ml/app@{digests['par1']}", "uses-par1")
    # and the kubelet pulled an image by itself
    containerd.ctr("images", "pull", "--hosts-dir", str(hosts_dir), f"{host}/ml/other:v1")
    # When ml/app:v1 moves again, with CleanupSuperseded
    outcome, (line,) = run([new], CleanupSuperseded="true")
    assert line.outcome == "pulled", outcome.stderr
    names = containerd.images()
    targets = {detail["digest"] for detail in names.values()}
    # Then the first digest (superseded, unused) is gone, with every name it had
    assert digests["par0"] not in targets
    # And the one a container uses stays, as does what the agent did not pull
    assert f"{host}/ml/app@{digests['par1']}" in names
    assert "a container uses it" in outcome.stderr
    assert f"{host}/ml/other:v1" in names
    assert names[f"{host}/ml/app:v1"]["digest"] == digests["par2"]


def test_without_cleanup_nothing_is_removed(run, registry, pushed, node_base, containerd):
    host = registry.host
    for name in ("par0", "par1"):
        oci_images.push(node_base / "layouts" / name, f"{host}/ml/keep:{name}")
    run([f"{host}/ml/keep:v1@{pushed['par0'].digest}"])
    run([f"{host}/ml/keep:v1@{pushed['par1'].digest}"])
    assert f"{host}/ml/keep@{pushed['par0'].digest}" in containerd.images()


# ---- 7. Bottlerocket --------------------------------------------------------------------------


BOTTLEROCKET_APICLIENT = """#!/bin/bash
# Bottlerocket's apiclient in the control container, as far as the agent uses it (the facts and
# their sources: docs/node-agent.md): `exec admin sheltie CMD` runs CMD in the host's namespaces,
# where the control container's own files are not (here: a mount namespace with a tmpfs over its
# TMPDIR), with a clean environment, stdout and stderr merged, no shell on the host, and only
# while the admin host container is enabled (it is not by default).
printf '%s\\n' "$*" >> "$APICLIENT_LOG"
[ "$1 $2" = "exec admin" ] || { echo "unsupported apiclient call: $*"; exit 64; }
[ ! -e "$ADMIN_DISABLED" ] || { echo 'ctr: container "admin" in namespace "default": not found'; exit 1; }
[ "$3" = sheltie ] || { echo "not through sheltie: $*"; exit 64; }
shift 3
case "${1##*/}" in sh | bash | dash) echo "nsenter: failed to execute $1: No such file or directory"; exit 127 ;; esac
exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CONTAINERD_ADDRESS="$HOST_CONTAINERD" \\
  unshare --mount --propagation private -- /bin/bash -c 'mount -t tmpfs host-view "$1" && shift && exec "$@"' \\
  host-view "$CONTROL_TMP" "$@" 2>&1
"""


@pytest.fixture
def bottlerocket(tmp_path: Path, containerd: containerd_nodes.Containerd) -> dict[str, Path]:
    """A control container's view: apiclient on PATH (the only way to the host), its own TMPDIR."""
    control = tmp_path / "control"
    (control / "bin").mkdir(parents=True)
    (control / "tmp").mkdir()
    apiclient = control / "bin" / "apiclient"
    apiclient.write_text(
        BOTTLEROCKET_APICLIENT.replace("$APICLIENT_LOG", str(control / "apiclient.log"))
        .replace("$ADMIN_DISABLED", str(control / "admin-disabled"))
        .replace("$HOST_CONTAINERD", str(containerd.socket))
        .replace("$CONTROL_TMP", str(control / "tmp"))
    )
    apiclient.chmod(0o755)
    return {"bin": control / "bin", "tmp": control / "tmp", "log": control / "apiclient.log",
            "disabled": control / "admin-disabled", "host_run": tmp_path / "host-run"}  # fmt: skip


def test_on_bottlerocket_without_the_admin_container_nothing_is_pulled_and_the_reason_says_what_to_enable(
    script, containerd, registry, pushed, hosts_dir, bottlerocket
):
    bottlerocket["disabled"].touch()  # the default on Bottlerocket's aws-k8s variants
    outcome = containerd_nodes.run_agent(script, containerd, {"Images": item(registry, pushed["small"])}, hosts_dir=hosts_dir,
                             path_prefix=[bottlerocket["bin"]], tmp_dir=bottlerocket["tmp"])  # fmt: skip
    assert outcome.response_code == 3
    fatal = fatal_reason(outcome.stdout)
    assert "admin container" in fatal and "settings.host-containers.admin.enabled = true" in fatal
    assert containerd.images() == {}


def test_on_bottlerocket_pulls_go_to_the_hosts_containerd_with_a_registry_configuration_on_the_host(
    script, containerd, private_registry, ecr_hosts, bottlerocket, tmp_path
):
    # Given the admin container enabled, an ECR image (a private registry wanting AWS:<token>),
    # and the token from the kubelet's credential provider, which on a host logs as it answers
    private, secure = private_registry
    provider = bottlerocket["bin"] / "ecr-credential-provider"
    provider.write_text(
        "#!/bin/bash\ncat >/dev/null\n"
        'echo "I1202 12:00:00.000000       1 main.go:42] answering a credential request" >&2\n'
        f'printf \'{{"kind":"CredentialProviderResponse","cacheKeyType":"Registry",'
        f'"auth":{{"{ECR}":{{"username":"AWS","password":"%s"}}}}}}\\n\' \'{private.password}\'\n'
    )
    provider.chmod(0o755)
    settings = {"PREFETCH_HOST_RUN_DIR": str(bottlerocket["host_run"])}
    # When the agent runs in the control container
    outcome = containerd_nodes.run_agent(script, containerd, {"Images": f"{ECR}/ml/secure:v1@{secure.digest}"},
                             hosts_dir=ecr_hosts, path_prefix=[bottlerocket["bin"]], tmp_dir=bottlerocket["tmp"],
                             node_settings=settings)  # fmt: skip
    # Then the image is pulled into the host's containerd, through sheltie, with the registry
    # configuration (and its Authorization header) written on the host, where ctr reads it
    (line,) = results(outcome.stdout)
    assert outcome.response_code == 0 and line.outcome == "pulled", outcome.stderr
    assert f"{ECR}/ml/secure:v1" in containerd.images()
    logged = bottlerocket["log"].read_text().splitlines()
    pulls = [c for c in logged if c.startswith("exec admin sheltie ctr --namespace k8s.io images pull ")]
    assert pulls and all(f"--hosts-dir {bottlerocket['host_run']}/prefetch." in c for c in pulls)
    # And nothing of it is left on the host or in the control container
    assert list(bottlerocket["host_run"].iterdir()) == []
    assert list(bottlerocket["tmp"].iterdir()) == []


# ---- 8. injection ---------------------------------------------------------------------------

CANARY = Path("/tmp/prefetch-canary")
HOSTILE = [
    "x;touch /tmp/prefetch-canary",
    "$(touch /tmp/prefetch-canary)",
    "`touch /tmp/prefetch-canary`",
    "v1\ntouch /tmp/prefetch-canary",
    "v1' ; touch /tmp/prefetch-canary ; '",
    'v1" ; touch /tmp/prefetch-canary ; "',
    "../../../../tmp/prefetch-canary",
    "a" * 10_000,
    "ünïcødé-☃",
    "${IFS}touch${IFS}/tmp/prefetch-canary",
    "1|touch /tmp/prefetch-canary",
    "--help",
]


def hostile_parameters(registry: servers.Registry, pushed: dict[str, Pushed]) -> list[dict[str, str]]:
    good = item(registry, pushed["small"])
    cases = []
    for value in HOSTILE:
        cases += [
            {"Images": value},
            {"Images": f"{good},{value}"},
            {"Images": good.replace(":v1@", f":{value}@")},
            {"Images": good.replace("/ml/small", f"/ml/{value}")},
            {"Images": good.replace("sha256:", f"sha256:{value}")},
            {"Images": good, "MinFreeDiskMiB": value},
            {"Images": good, "Parallelism": value},
            {"Images": good, "PullTimeoutSeconds": value},
            {"Images": good, "CleanupSuperseded": value},
            {"Images": good, "Mode": value},
            {"Images": good, "PinImages": value},
        ]
    return cases


def test_hostile_parameters_run_nothing_and_pull_nothing(script, containerd, registry, pushed, hosts_dir):
    CANARY.unlink(missing_ok=True)
    for parameters in hostile_parameters(registry, pushed):
        outcome = containerd_nodes.run_agent(script, containerd, parameters, hosts_dir=hosts_dir)
        assert outcome.response_code == 2, (parameters, outcome.stderr)
        # The reason on stdout, where the audit reads it; the SSM agent's own line ends stderr
        assert fatal_reason(outcome.stdout).startswith("rejected: "), outcome.stdout
        assert outcome.stderr.endswith("failed to run commands: exit status 2")
        assert not CANARY.exists(), parameters
    assert containerd.images() == {}


def test_the_documents_patterns_and_the_senders_bounds_reject_the_same_values(registry, pushed):
    # Given the values the agent script rejects (above), when the SSM agent's own check (Go's
    # regexp: RE2) and the bounds a RE2 pattern cannot carry (lengths, 50 images: checked in
    # prefetcher.refs before any send) look at them, then each is rejected before the script runs
    spec = load()["Resources"]["PrefetchDocument"]["Properties"]["Content"]["parameters"]
    for parameters in hostile_parameters(registry, pushed):
        rejected = [
            name for name, value in parameters.items()
            if not ssm_agent.go_compile(spec[name]["allowedPattern"]).search(value)
        ]  # fmt: skip
        if not rejected:
            with pytest.raises(ValueError):
                refs.parse_images_parameter(parameters["Images"])
    assert spec["Images"]["allowedPattern"] == refs.IMAGES_PARAMETER


def test_ecr_credentials_can_come_from_the_kubelets_credential_provider(
    script, containerd, private_registry, ecr_hosts, tmp_path
):
    # The EKS AMI's ecr-credential-provider speaks the kubelet's CredentialProvider protocol on
    # stdin/stdout; a stand-in answers with the registry's password for the requested image.
    registry, secure = private_registry
    provider_dir = tmp_path / "provider"
    provider_dir.mkdir()
    (provider_dir / "secret").write_text(registry.password)
    provider = provider_dir / "ecr-credential-provider"
    provider.write_text(
        "#!/bin/bash\n"
        "request=$(cat)\n"
        f'case "$request" in *\'"kind":"CredentialProviderRequest"\'*"{ECR}"*) ;; *) exit 1;; esac\n'
        f'printf \'{{"kind":"CredentialProviderResponse","apiVersion":"credentialprovider.kubelet.k8s.io/v1",'
        f'"cacheKeyType":"Registry","auth":{{"{ECR}":{{"username":"AWS","password":"%s"}}}}}}\' '
        f'"$(cat {provider_dir / "secret"})"\n'
    )
    provider.chmod(0o755)
    outcome = containerd_nodes.run_agent(script, containerd, {"Images": f"{ECR}/ml/secure:v1@{secure.digest}"},
                             hosts_dir=ecr_hosts, path_prefix=[provider_dir])  # fmt: skip
    (line,) = results(outcome.stdout)
    assert outcome.response_code == 0 and line.outcome == "pulled", outcome.stderr
    assert registry.password not in outcome.stdout + outcome.stderr


# ---- 7. the SSM agent's execution timeout ---------------------------------------------------


def test_at_the_execution_timeout_finished_images_are_reported_and_no_credential_is_left(
    script, containerd, private_registry, ecr_hosts, registry, pushed, tmp_path
):
    # Given a run that pulls an ECR image (its token goes into the work directory's hosts.toml)
    # and an image from a registry that stalls, with an execution timeout the second cannot meet
    private, secure = private_registry
    bin_dir = containerd_nodes.fake_aws_cli(tmp_path / "bin", private.password)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    with FaultyProxy(registry.host, stall_blobs=120) as proxy:
        containerd_nodes.hosts_entry(ecr_hosts, registry.host, proxy.host)
        parameters = {
            "Images": f"{ECR}/ml/secure:v1@{secure.digest},{item(registry, pushed['other'])}",
            "Parallelism": "2",
        }
        # When the SSM agent stops it: SIGKILL to its whole process group, no trap runs
        outcome = containerd_nodes.run_agent(script, containerd, parameters, hosts_dir=ecr_hosts, path_prefix=[bin_dir],
                                 execution_timeout=15, tmp_dir=tmp)  # fmt: skip
    assert (outcome.status, outcome.details, outcome.response_code) == ("TimedOut", "Execution Timed Out", 137)
    # Then the image that finished before the kill has its line
    (line,) = results(outcome.stdout)
    assert (line.outcome, line.digest) == ("pulled", secure.digest)
    # And nothing holding the credential is left on the node once the script is gone
    deadline = time.monotonic() + 5
    while list(tmp.glob("prefetch.*")) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert list(tmp.glob("prefetch.*")) == []


def test_a_run_first_removes_what_a_run_that_is_gone_left(script, containerd, registry, pushed, hosts_dir, tmp_path):
    # Given the work directory of a run whose process is gone (its ECR header still in it), and
    # the work directory of a run that is still going
    gone = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True, check=True).stdout.strip()
    tmp = tmp_path / "tmp"
    stale = tmp / f"prefetch.{gone}.Ab12Cd34" / "hosts" / ECR
    stale.mkdir(parents=True)
    (stale / "hosts.toml").write_text('[header]\n  Authorization = "Basic QVdTOnNlY3JldA=="\n')
    live = tmp / f"prefetch.{os.getpid()}.Ef56Gh78"
    live.mkdir()
    # When the agent runs
    outcome = containerd_nodes.run_agent(script, containerd, {"Images": item(registry, pushed["small"])}, hosts_dir=hosts_dir,
                             tmp_dir=tmp)  # fmt: skip
    assert outcome.response_code == 0, outcome.stderr
    # Then the gone run's directory is removed, and the live one's is not
    assert not (tmp / f"prefetch.{gone}.Ab12Cd34").exists()
    assert live.exists()
