"""Committed generated files (the CRD, the reference, the hyperparameter table, the OLM bundle): write them,
or check that they are current. One implementation for every generator's ``--write`` / ``--check``."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(files: dict[Path, str], root: Path, *, write: bool, command: str, stale: list[str] = ()) -> int:
    """Writes ``files`` (paths relative to ``root``), or returns 1 naming those that differ, are missing or
    are listed in ``stale`` (files that should not exist any more), with the command that regenerates them."""
    out_of_date = list(stale)
    for rel, text in files.items():
        path = root / rel
        if write:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {rel}")
        elif not path.exists() or path.read_text() != text:
            out_of_date.append(str(rel))
    if out_of_date and not write:
        print(f"stale generated files (run {command} --write): {', '.join(out_of_date)}", file=sys.stderr)
        return 1
    return 0
