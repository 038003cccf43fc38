"""Flags shared by several commands, defined once."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """`--config PATH`: every command that reads the configuration takes it."""
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("RAGVISOR_CONFIG") or None,
        help="TOML configuration file (default: $RAGVISOR_CONFIG, else built-in defaults)",
    )
