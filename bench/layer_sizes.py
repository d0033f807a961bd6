"""Lambda layer sizes: each layer built as `sam build` builds it, unzipped and zipped.

`sam build` (BuildMethod: makefile) runs `make build-<LogicalId>` in the layer's folder with
ARTIFACTS_DIR set; each layers/*/Makefile installs arm64 wheels for Python 3.13 with pip's
--platform options. Running the same Makefile gives the same tree (it needs PyPI, or pip's
cache). AWS caps a function and its layers at 250 MB unzipped; what a layer weighs is also
what a new execution environment fetches and unpacks before the handler's first import.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1_000_000  # decimal megabytes, as issue 10 states its size targets


def layer_targets() -> dict[str, str]:
    """{folder name: make target} for every layers/<name>/Makefile with a `build-*Layer` rule."""
    targets = {}
    for makefile in sorted((ROOT / "layers").glob("*/Makefile")):
        match = re.search(r"^(build-\w+Layer):", makefile.read_text(), re.MULTILINE)
        if match:
            targets[makefile.parent.name] = match.group(1)
    return targets


def tree_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def zipped_bytes(root: Path, archive: Path) -> int:
    """Zipped as sam zips a layer: deflate, paths relative to the artifacts folder."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        for path in sorted(root.rglob("*")):
            bundle.write(path, path.relative_to(root))
    return archive.stat().st_size


def build_layer(folder: str, target: str, artifacts: Path) -> None:
    """Run the layer's Makefile rule; its output (pip's) is shown only if it fails."""
    command = ["make", "--no-print-directory", "-C", str(ROOT / "layers" / folder), target,
               f"ARTIFACTS_DIR={artifacts}", f"PYTHON={sys.executable}"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"building the {folder} layer failed: {' '.join(command)}")


def layer_sizes() -> dict[str, tuple[int, int]]:
    """{layer folder: (unzipped bytes, zipped bytes)}, each built in a temporary folder."""
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="mxpush-layers-") as scratch:
        for folder, target in layer_targets().items():
            artifacts = Path(scratch) / folder
            artifacts.mkdir()
            build_layer(folder, target, artifacts)
            zipped = zipped_bytes(artifacts, Path(scratch) / f"{folder}.zip")
            sizes[folder] = (tree_bytes(artifacts), zipped)
    return sizes


def print_layer_sizes() -> None:
    print("## Lambda layers as `sam build` builds them (arm64, Python 3.13)")
    print(f"{'layer':<12}{'unzipped MB':>14}{'zipped MB':>12}")
    for folder, (unzipped, zipped) in layer_sizes().items():
        print(f"{folder:<12}{unzipped / MB:14.1f}{zipped / MB:12.1f}")
    print()


if __name__ == "__main__":
    print_layer_sizes()
