"""Committed generated files (the CRD, the reference, the hyperparameter table, the OLM bundle): write them,
or check that they are current. One implementation for every generator's ``--write`` / ``--check``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
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


def generator_main(
    argv: list[str] | None, *, description: str | None, command: str, root: Path, render: Callable[[], dict[Path, str]]
) -> int:
    """A generator's command line: print the (first) rendered file, ``--write`` them, or ``--check`` them."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", action="store_true", help="write the generated files under --root")
    p.add_argument("--check", action="store_true", help="exit 1 naming the generated files that are stale")
    p.add_argument("--root", type=Path, default=root, help="where the files' relative paths start")
    args = p.parse_args(argv)
    files = render()
    if not (args.write or args.check):
        sys.stdout.write(next(iter(files.values())))
        return 0
    return write_or_check(files, args.root, write=args.write, command=command)
