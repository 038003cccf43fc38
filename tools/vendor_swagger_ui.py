"""Vendor Swagger UI into the package, so `/docs` renders on a host with no internet.

Why: FastAPI's default `/docs` page loads Swagger UI from a CDN, which a box on a closed network
cannot reach, so the page stays blank. We ship the few files it needs inside the package
(`daemon/ragvisor/web/static/vendor/swagger-ui/`), taken from one pinned release of the npm
package `swagger-ui-dist`, checked against the registry's sha512 integrity. The files are
committed: installing ragvisor needs no build step and no Node.js.

Run it only to move to another release (change VERSION and INTEGRITY to what
`npm view swagger-ui-dist@X dist.integrity` prints):

    .venv/bin/python tools/vendor_swagger_ui.py

`MANIFEST.json` beside the files records the release and each file's sha256; a unit test
(tests/unit/test_web_assets.py) checks the committed files against it.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "swagger-ui-dist"
VERSION = "5.35.0"
INTEGRITY = "sha512-U06rpMtW9V3XPGOBeamTUSr0Z09jMX4IJuANpE/EZbAhw0G8CgwrzU4YmXkn/h0wCDNsXdGarTNNHC3sU8yVUQ=="
# What the page needs (the standalone bundle and its stylesheet) and the licence that must
# travel with them; source maps, the ES modules and the sample index.html stay behind.
FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE")
TARGET = Path(__file__).resolve().parents[1] / "daemon/ragvisor/web/static/vendor/swagger-ui"


def fetch_tarball() -> bytes:
    """The release's tarball, by `npm pack` (which uses the machine's npm registry settings)."""
    with tempfile.TemporaryDirectory() as tmp:
        npm = shutil.which("npm") or sys.exit("npm is needed to fetch the release")
        subprocess.run([npm, "pack", f"{PACKAGE}@{VERSION}", "--silent"], cwd=tmp, check=True)
        return next(Path(tmp).glob("*.tgz")).read_bytes()


def check_integrity(tarball: bytes) -> None:
    """Refuse a tarball whose sha512 is not the pinned one."""
    digest = base64.b64encode(hashlib.sha512(tarball).digest()).decode()
    if f"sha512-{digest}" != INTEGRITY:
        sys.exit(f"{PACKAGE}@{VERSION}: integrity mismatch (got sha512-{digest})")


def main() -> None:
    tarball = fetch_tarball()
    check_integrity(tarball)
    TARGET.mkdir(parents=True, exist_ok=True)
    hashes: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        for name in FILES:
            member = archive.extractfile(f"package/{name}")
            if member is None:
                sys.exit(f"{PACKAGE}@{VERSION} has no {name}")
            data = member.read()
            (TARGET / name).write_bytes(data)
            hashes[name] = hashlib.sha256(data).hexdigest()
    manifest = {"package": PACKAGE, "version": VERSION, "integrity": INTEGRITY, "files": hashes}
    (TARGET / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"vendored {PACKAGE}@{VERSION} into {TARGET}")


if __name__ == "__main__":
    main()
