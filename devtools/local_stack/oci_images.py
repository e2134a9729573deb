"""Build OCI images without Docker (a tar layer, a config, a manifest, an index) and push them
to a registry with skopeo; for the node tests, the benchmarks and the demo. Deterministic: the
same content gives the same digest."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import platform
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
OTHER_ARCH = "arm64" if ARCH == "amd64" else "amd64"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX = "application/vnd.oci.image.index.v1+json"


def _blob(layout: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


def _layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mtime = 0
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    uncompressed = raw.getvalue()
    return gzip.compress(uncompressed, mtime=0), "sha256:" + hashlib.sha256(uncompressed).hexdigest()


@dataclass(frozen=True)
class Built:
    digest: str  # of the manifest (or index) pushed under the tag
    size: int  # bytes of the layers (compressed) of this platform


def _manifest(layout: Path, arch: str, files: dict[str, bytes]) -> tuple[dict[str, object], int]:
    layer, diff_id = _layer(files)
    layer_digest = _blob(layout, layer)
    config = json.dumps(
        {"architecture": arch, "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": [diff_id]}},
        separators=(",", ":"),
    ).encode()
    config_digest = _blob(layout, config)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": len(layer)}],
        },
        separators=(",", ":"),
    ).encode()
    digest = _blob(layout, manifest)
    return (
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": len(manifest),
            "platform": {"architecture": arch, "os": "linux"},
        },
        len(layer),
    )


def build(layout: Path, files: dict[str, bytes], *, multi_arch: bool = False) -> Built:
    """An OCI layout at `layout` with one image (tag `latest`): a single manifest for this
    machine's platform, or an index for this platform and another one."""
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    mine, size = _manifest(layout, ARCH, files)
    if multi_arch:
        other, _ = _manifest(layout, OTHER_ARCH, {**files, "other-arch": b"x" * 1024})
        index = json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [other, mine]},
            separators=(",", ":"),
        ).encode()
        top = {"mediaType": INDEX, "digest": _blob(layout, index), "size": len(index)}
    else:
        top = {key: mine[key] for key in ("mediaType", "digest", "size")}
    top["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return Built(digest=str(top["digest"]), size=size)


def push(layout: Path, destination: str, *, credentials: str | None = None) -> None:
    """skopeo copy the layout's image to docker://destination (plain HTTP)."""
    command = ["skopeo", "copy", "--all", "--quiet", "--dest-tls-verify=false", "--preserve-digests"]
    if credentials:
        command += ["--dest-creds", credentials]
    subprocess.run([*command, f"oci:{layout}:latest", f"docker://{destination}"], check=True, capture_output=True)
