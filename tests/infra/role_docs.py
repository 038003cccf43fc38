"""The variable tables of the roles' READMEs, generated from each role's meta/argument_specs.yml.

The argument spec is the one place a role's variables are typed, constrained and described
(Ansible validates it at role entry); hand-copied README tables drift from it, so the tables are
generated. `python -m tests.infra.role_docs` rewrites them; `--check` exits 1 when one is stale,
and tests/infra/test_role_specs.py fails the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROLES_DIR = Path(__file__).resolve().parents[2] / "roles"
BEGIN = (
    "<!-- BEGIN VARIABLES: generated from meta/argument_specs.yml by "
    "`python -m tests.infra.role_docs`; edit the spec, not this table -->"
)
END = "<!-- END VARIABLES -->"


def role_dirs() -> list[Path]:
    """Every role of the repository, in name order."""
    return sorted(path.parent.parent for path in ROLES_DIR.glob("*/meta/argument_specs.yml"))


def load_options(role_dir: Path) -> dict[str, dict[str, Any]]:
    """The options of the role's `main` entry point, in the spec's order."""
    spec = yaml.safe_load((role_dir / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    options: dict[str, dict[str, Any]] = spec["argument_specs"]["main"]["options"]
    return options


def _cell(text: str) -> str:
    """Text fit for one cell of a Markdown table: one line, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(value: Any) -> str:
    shown = value if isinstance(value, str) else json.dumps(value)
    return f"`{_cell(shown)}`" if shown != "" else '`""`'


def _type_text(option: dict[str, Any]) -> str:
    kind = str(option.get("type", "str"))
    if "elements" in option:
        kind = f"{kind} of {option['elements']}"
    if "choices" in option:
        kind += ": " + ", ".join(f"`{choice}`" for choice in option["choices"])
    return kind


def _default_text(option: dict[str, Any]) -> str:
    if option.get("required"):
        return "*required*"
    if "default" not in option:
        return ""
    return _code(option["default"])


def _description(option: dict[str, Any]) -> str:
    description = option.get("description", "")
    if isinstance(description, list):
        description = " ".join(description)
    return _cell(str(description))


def render_table(options: dict[str, dict[str, Any]]) -> str:
    """A Markdown table with one row per variable and per key of a dict variable's `options`."""
    lines = ["| Variable | Type | Default | Description |", "|---|---|---|---|"]
    for name, option in options.items():
        lines.append(
            f"| `{name}` | {_type_text(option)} | {_default_text(option)} "
            f"| {_description(option)} |"
        )
        for key, sub in option.get("options", {}).items():
            lines.append(
                f"| `{name}.{key}` | {_type_text(sub)} | {_default_text(sub)} "
                f"| {_description(sub)} |"
            )
    return "\n".join(lines)


def splice(readme: str, table: str) -> str:
    """The README with the text between the markers replaced by `table`.

    Raises ValueError when the markers are missing.
    """
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"README lacks the markers {BEGIN!r} ... {END!r}")
    return readme[: start + len(BEGIN)] + "\n" + table + "\n" + readme[end:]


def expected_readme(role_dir: Path) -> tuple[str, str]:
    """The README's current text and the text it should have."""
    readme = (role_dir / "README.md").read_text(encoding="utf-8")
    return readme, splice(readme, render_table(load_options(role_dir)))


def main(argv: list[str] | None = None) -> int:
    """Rewrite the tables, or with --check report the stale ones; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale tables")
    args = parser.parse_args(argv)
    stale = []
    for role_dir in role_dirs():
        current, expected = expected_readme(role_dir)
        if current == expected:
            continue
        stale.append(role_dir.name)
        if not args.check:
            (role_dir / "README.md").write_text(expected, encoding="utf-8")
    if stale:
        verb = "stale" if args.check else "rewritten"
        sys.stdout.write(
            f"{verb}: " + ", ".join(f"roles/{name}/README.md" for name in stale) + "\n"
        )
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
