"""Run `ansible-playbook` from the repository as a subprocess and read its PLAY RECAP.

The tests drive Ansible exactly as an operator does (the repository's ansible.cfg, an inventory,
a playbook), with Ansible's state kept out of the home directory and every run bounded by a
timeout. `run_playbook` returns the exit status, the whole output and, per host, the recap's
counters (`ok`, `changed`, `failed`, ...).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = BIN / "ansible-playbook"
ANSIBLE_LINT = BIN / "ansible-lint"
PLAYBOOKS = REPO / "playbooks"
INVENTORY = REPO / "inventory"

# localhost : ok=44   changed=0    unreachable=0    failed=0    skipped=18   rescued=0 ...
_RECAP_LINE = re.compile(r"^(?P<host>\S+)\s+:\s+(?P<counters>(?:\w+=\d+\s*)+)$")
_COUNTER = re.compile(r"(\w+)=(\d+)")


@dataclass(frozen=True)
class Recap:
    """One host's line of the PLAY RECAP."""

    ok: int
    changed: int
    unreachable: int
    failed: int
    skipped: int
    rescued: int
    ignored: int


@dataclass(frozen=True)
class PlaybookRun:
    """What one `ansible-playbook` run printed and how it ended."""

    args: tuple[str, ...]
    returncode: int
    output: str
    recap: dict[str, Recap]

    @property
    def text(self) -> str:
        """The output on one line per paragraph: Ansible wraps long messages at ~80 columns."""
        return " ".join(self.output.split())

    def host(self, name: str = "localhost") -> Recap:
        """The recap of `name`; fails the test with the output when the run has none."""
        if name not in self.recap:
            raise AssertionError(f"no PLAY RECAP line for {name}:\n{self.output[-4000:]}")
        return self.recap[name]

    def changed_tasks(self) -> str:
        """What changed (changed_tasks()): the message of a failed idempotence check."""
        return changed_tasks(self.output)


def changed_tasks(output: str) -> str:
    """The tasks that reported `changed:` (each TASK block read on its own), then the
    output's tail — for either runner's output (this module's, tests/infra/nspawn.py's)."""
    changed = [
        block.split("]", 1)[0]
        for block in output.split("TASK [")[1:]
        if re.search(r"^changed: ", block, re.MULTILINE)
    ]
    return "changed tasks: " + "; ".join(changed) + "\n" + output[-6000:]


def parse_recap(output: str) -> dict[str, Recap]:
    """The PLAY RECAP lines of an `ansible-playbook` output, by host."""
    _, marker, tail = output.rpartition("PLAY RECAP")
    if not marker:
        return {}
    recap = {}
    for line in tail.splitlines()[1:]:
        match = _RECAP_LINE.match(line.strip())
        if match is None:
            continue
        counters = {key: int(value) for key, value in _COUNTER.findall(match["counters"])}
        recap[match["host"]] = Recap(**{key: counters.get(key, 0) for key in Recap.__annotations__})
    return recap


def ansible_environment(state_dir: Path) -> dict[str, str]:
    """The environment of every Ansible subprocess: the repository's configuration, Ansible's
    state and caches under `state_dir`, no colours, the virtualenv first in PATH.
    """
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO / "ansible.cfg"),
        ANSIBLE_HOME=str(state_dir / "ansible"),
        ANSIBLE_LOCAL_TEMP=str(state_dir / "ansible" / "tmp"),
        ANSIBLE_REMOTE_TEMP=str(state_dir / "ansible" / "remote-tmp"),
        XDG_CACHE_HOME=str(state_dir / "cache"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    env.pop("ANSIBLE_STDOUT_CALLBACK", None)
    return env


def run_playbook(
    playbook: str,
    *,
    inventory: str,
    env: dict[str, str],
    extra_vars: Mapping[str, object] | None = None,
    check: bool = False,
    diff: bool = True,
    connection: str | None = None,
    options: tuple[str, ...] = (),
    timeout_s: float = 300,
) -> PlaybookRun:
    """Run `playbooks/<playbook>` against `inventory/<inventory>`; never longer than `timeout_s`.

    Extra variables are passed as one JSON object, so their types survive; `options` are more
    command-line options (e.g. `--skip-tags preflight`). Raises
    subprocess.TimeoutExpired when the run does not finish in time.
    """
    args = [
        str(ANSIBLE_PLAYBOOK),
        "-i",
        str(INVENTORY / inventory),
        str(PLAYBOOKS / playbook),
    ]
    if connection:
        args += ["-c", connection]
    if check:
        args.append("--check")
    if diff:
        args.append("--diff")
    if extra_vars:
        args += ["-e", json.dumps(extra_vars)]
    args += options
    completed = subprocess.run(
        args,
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output = completed.stdout + completed.stderr
    return PlaybookRun(tuple(args), completed.returncode, output, parse_recap(completed.stdout))
