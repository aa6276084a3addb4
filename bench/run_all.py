"""Every benchmark, one after the other, then bench/results.md. About 50 minutes on two shared cores: 10 for the
benchmarks (the 2026-12-03 09:43 run in results.md), ~40 for the 4,000 TrainingJobs run to completion for the
5,000 figure (1,000 took 609 s on the bed: bench/README.md, "Async handlers").

    .venv/bin/python bench/run_all.py [--quick] [--only staging,operator,...]

Each benchmark measures its candidate and a baseline in the same run and reports the ratio (see bench/README.md).
No benchmark fails on a missed goal: the table says which goals are met. The exit code is non-zero only when a
benchmark could not run at all.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import gpu, multinode, operator_latency, resume_cost, staging, trainer_overhead
from bench.common import ROOT, Row, log

RESULTS = ROOT / "bench" / "results.md"


def benches(quick: bool) -> dict[str, callable]:
    if quick:  # a smoke run of the machinery, minutes less; its figures are not the reported ones
        return {
            "operator": lambda: operator_latency.run(n=50, rss_n=100, idle=10, life_n=5, rounds=2),
            "staging": lambda: staging.run(images=300, repeats=2),
            "overhead": lambda: trainer_overhead.run(images=60, epochs=3, repeats=1),
            "resume": lambda: resume_cost.run(images=60, epochs=4, repeats=1),
            "multinode": lambda: multinode.run(images=60, epochs=3, repeats=1),
            "gpu": gpu.run,
        }
    return {
        # the memory figure is taken with the 400 TrainingJobs of the latency rounds + 600 more held: the goal's 1,000;
        # then 4,000 more run to completion: the goal's 5,000 (~40 min, see the docstring)
        "operator": lambda: operator_latency.run(n=200, rss_n=600, idle=30, life_n=20, rounds=2, rss_done_n=4000),
        "staging": lambda: staging.run(images=2000, repeats=3, archives=("zip", "tar")),
        "overhead": lambda: trainer_overhead.run(images=240, epochs=5, repeats=3),
        "resume": lambda: resume_cost.run(images=240, epochs=5, repeats=3),
        "multinode": lambda: multinode.run(images=120, epochs=4, repeats=2),
        "gpu": gpu.run,
    }


def cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def write(rows: dict[str, list[Row]], errors: dict[str, str], seconds: dict[str, float], argv: list[str]) -> None:
    cmd = "  ".join(["`.venv/bin/python bench/run_all.py" + (" " + shlex.join(argv) if argv else "") + "`"])
    out = [
        "# Benchmark results",
        "",
        f"Command: {cmd} (from the repository root; the local test bed is brought up if needed).",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node() or 'this machine'}: "
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        "2 CPU cores shared with other work, no GPU. Every baseline was measured in the same run, interleaved "
        "with ours; ratios, not absolute times, are the figures to compare between machines. "
        "Durations per benchmark: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()) + ".",
        "",
        "| figure | ours | baseline | ratio | goal | met? | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rs in rows.items():
        for r in rs:
            out.append(f"| {cell(r.figure)} | {cell(r.ours)} | {cell(r.baseline)} | {cell(r.ratio)} | {cell(r.goal)} "
                       f"| {cell(r.met)} | {cell(r.note)} |")  # fmt: skip
        if name in errors:
            out.append(f"| {name}: did not run | - | - | - | - | no | {cell(errors[name])} |")
    for name, err in errors.items():
        if name not in rows:
            out.append(f"| {name}: did not run | - | - | - | - | no | {cell(err)} |")
    RESULTS.write_text("\n".join(out) + "\n")
    log(f"wrote {RESULTS}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes: checks the machinery in a few minutes")
    ap.add_argument("--only", default="", help="comma list of: operator, staging, overhead, resume, gpu")
    a = ap.parse_args(argv)
    todo = benches(a.quick)
    if a.only:
        todo = {k: v for k, v in todo.items() if k in a.only.split(",")}
    rows: dict[str, list[Row]] = {}
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    t_all = time.monotonic()
    for name, fn in todo.items():
        log(f"=== {name}")
        t0 = time.monotonic()
        try:
            rows[name] = fn()
        except Exception as e:
            traceback.print_exc()
            errors[name] = f"{type(e).__name__}: {e}"
        seconds[name] = time.monotonic() - t0
        for r in rows.get(name, []):
            print(r.line(note=False), flush=True)
        write(rows, errors, seconds, argv)
    log(f"all benchmarks: {time.monotonic() - t_all:.0f} s")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
