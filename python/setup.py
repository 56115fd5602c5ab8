"""Builds the ``fdbvfs`` wheel: the loadable extension inside a Python package.

``pip wheel ./python`` (or ``python -m build --wheel python``) runs
``cargo build --release --lib`` on the repository's ``Cargo.toml`` (one
directory up) and copies ``libfdbvfs.so`` into the package. Environment:

* ``FDBVFS_LIBRARY``: ship this already-built library instead (no cargo run);
* ``FDBVFS_FEATURES``: cargo features, e.g. ``fdb`` for the FoundationDB
  backend (needs libfdb_c and libclang to build);
* ``CARGO``, ``CARGO_TARGET_DIR``: honoured as cargo honours them (a warm
  target directory makes the build a no-op);
* ``FDBVFS_STRIP=0``: keep the debug info (the release profile's line
  tables make the library ~10 times larger; by default ``strip -S`` drops
  them from the copy in the wheel, when ``strip`` exists).

The wheel is tagged ``py3-none-<platform>``: the library does not link
against Python, so one wheel serves every CPython 3 on its platform.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

try:  # setuptools >= 70.1 ships bdist_wheel itself
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover - older setuptools
    from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]

HERE = Path(__file__).resolve().parent
SUFFIXES = (".so", ".dylib", ".dll")


def cargo_build() -> Path:
    """Builds the cdylib and returns its path (from cargo's JSON messages,
    so ``CARGO_TARGET_DIR`` and profiles need no guessing)."""
    prebuilt = os.environ.get("FDBVFS_LIBRARY")
    if prebuilt:
        path = Path(prebuilt)
        if not path.is_file():
            sys.exit(f"FDBVFS_LIBRARY={prebuilt}: no such file")
        return path
    manifest = HERE.parent / "Cargo.toml"
    if not manifest.is_file():
        sys.exit(
            f"{manifest} not found: build the wheel from a checkout of the "
            "fdbvfs repository, or set FDBVFS_LIBRARY to a built libfdbvfs.so"
        )
    cmd = [
        os.environ.get("CARGO", "cargo"),
        "build",
        "--release",
        "--lib",
        "--manifest-path",
        str(manifest),
        "--message-format=json-render-diagnostics",
    ]
    features = os.environ.get("FDBVFS_FEATURES")
    if features:
        cmd += ["--features", features]
    print("running " + " ".join(cmd), file=sys.stderr, flush=True)
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, text=True)
    except FileNotFoundError:
        sys.exit("cargo not found: install Rust (https://rustup.rs) or set CARGO")
    except subprocess.CalledProcessError as e:
        sys.exit(f"cargo build failed with exit code {e.returncode}")
    for line in out.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        target = msg.get("target") or {}
        if msg.get("reason") == "compiler-artifact" and "cdylib" in target.get(
            "crate_types", []
        ):
            for f in msg.get("filenames", []):
                if f.endswith(SUFFIXES):
                    return Path(f)
    sys.exit("cargo build reported no cdylib for fdbvfs")


class BuildPyWithLibrary(build_py):
    """build_py, plus the loadable library next to ``__init__.py``."""

    def run(self) -> None:
        super().run()
        lib = cargo_build()
        dest = Path(self.build_lib) / "fdbvfs" / ("libfdbvfs" + lib.suffix)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lib, dest)
        os.chmod(dest, 0o755)
        if os.environ.get("FDBVFS_STRIP", "1") != "0" and shutil.which("strip"):
            subprocess.run(["strip", "-S", str(dest)], check=False)


class PlatformWheel(bdist_wheel):
    """A platform wheel (it carries a native library) for any Python 3."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple:
        _, _, plat = super().get_tag()
        return "py3", "none", plat


setup(cmdclass={"build_py": BuildPyWithLibrary, "bdist_wheel": PlatformWheel})
