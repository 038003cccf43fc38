"""ragvisor wheels that differ from the checkout's: another version, other bytes under the same
version, or a `serve` that exits at once — what the upgrade and rollback tests deploy.

Each is built with `pip wheel --no-deps` from an edited copy of the checkout (a build writes
into its source tree; the checkout stays untouched).
"""

from __future__ import annotations

from pathlib import Path

from tests.infra.nspawn import REPO, build_project_wheel

BASE_VERSION = "0.1.0"
# Replaces the body of `ragvisor serve` in the broken variant: it exits before READY=1.
_SERVE_CALL = "    serve(settings_from(args))\n"
_BROKEN_SERVE = '    raise SystemExit("deliberately broken build (tests/infra/variants.py)")\n'


def build_variant(dest: Path, version: str, *, broken: bool = False, salt: str = "") -> Path:
    """ragvisor's wheel at `version`, built from an edited copy of the checkout: `broken` makes
    `serve` exit at once; `salt` changes the bytes without changing the version."""

    def edit(src: Path) -> None:
        pyproject = src / "pyproject.toml"
        text = pyproject.read_text()
        assert f'version = "{BASE_VERSION}"' in text, "pyproject.toml's version moved"
        pyproject.write_text(
            text.replace(f'version = "{BASE_VERSION}"', f'version = "{version}"', 1)
        )
        init = src / "daemon/ragvisor/__init__.py"
        init.write_text(
            init.read_text().replace(f'"{BASE_VERSION}"', f'"{version}"')
            + (f"# build {salt}\n" if salt else "")
        )
        if broken:
            commands = src / "daemon/ragvisor/cli/commands.py"
            body = commands.read_text()
            assert _SERVE_CALL in body, "cmd_serve changed: update the broken variant"
            commands.write_text(body.replace(_SERVE_CALL, _BROKEN_SERVE))

    return build_project_wheel(dest, REPO, edit)
