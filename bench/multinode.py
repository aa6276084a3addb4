"""Multi-node training on CPU (gloo): 2 pods x 1 rank against 1 pod x 2 ranks on the same two CPUs.

    .venv/bin/python bench/multinode.py [--images 120] [--epochs 4] [--imgsz 64] [--batch 16] [--repeats 2]

- 1 pod x 2 ranks (the baseline): one `yolo-trainer` with `cpuProcesses: 2`: torchrun starts 2 local ranks on
  both CPUs.
- 2 pods x 1 rank: two `yolo-trainer`s as the two pods of a 2-node job (`PET_NNODES=2`, node ranks 0 and 1,
  rendezvous at 127.0.0.1, what the operator's Indexed Job sets), each pinned to one CPU (`taskset`) as a
  1-CPU pod would be, each with its own work directory (a pod's own disk): the same world size, batch, data and
  CPUs; what differs is two elastic agents meeting through the static rendezvous, and every pod staging the
  dataset itself.
Runs alternate (baseline, candidate, candidate, baseline, ...); medians of `--repeats` each. Figures:
- epoch time: Ultralytics' own clock over the steady epochs, (time of the last results.csv row - time of the
  first) / (epochs - 1): the first epoch's warm-up left out;
- start-up: spawn -> the world's last rank up (its "rank" event, after the process group formed): staging,
  model build, rendezvous; for the 2-pod job the later of its two pods.
Goal: 2 pods x 1 rank within 1.15x of 1 pod x 2 ranks per epoch (the "pods" share one machine's loopback, so
this is the launch path's cost, not a network's).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from yolo_trainer.results import parse_results

from bench import trainer_runs as tr
from bench.common import VENV_BIN, Row, bed_up, fmt_ratio, free_port, log, median, testbed, training_bench_main

ONE_POD = "1 pod x 2 ranks"
TWO_PODS = "2 pods x 1 rank"


def _config(workdir: Path, prefix: str, epochs: int, imgsz: int, batch: int, name: str, ranks: int) -> Path:
    path = tr.trainer_config(workdir, prefix, epochs, imgsz, batch, name=name)
    cfg = json.loads(path.read_text())
    if ranks > 1:
        cfg["cpuProcesses"] = ranks
    path.write_text(json.dumps(cfg))
    return path


def _start(workdir: Path, config: Path, cpus: str, **env: str) -> tr.Run:
    workdir.mkdir(parents=True, exist_ok=True)
    return tr.start(["taskset", "-c", cpus, str(VENV_BIN / "yolo-trainer"), "--config", str(config)],
                    {**tr.base_env(workdir), **env}, workdir / "trainer.log")  # fmt: skip


def _steady_epoch_seconds(results_csv: Path) -> float:
    rows = parse_results(results_csv.read_text())
    times = [r.time for r in rows if r.time is not None]
    return (times[-1] - times[0]) / (len(times) - 1)


def _ranks_up(run: tr.Run) -> float:
    ts = [t for t, ev in run.events if ev.get("event") == "rank"]
    return max(ts) - run.started


def run_once(kind: str, base: Path, prefix: str, epochs: int, imgsz: int, batch: int) -> tuple[float, float]:
    """(steady epoch seconds, start-up seconds) of one job of ``kind``."""
    name = f"bench-mn-{uuid.uuid4().hex[:8]}"
    if kind == ONE_POD:
        wd = base / name
        run = _start(wd, _config(wd, prefix, epochs, imgsz, batch, name, ranks=2), "0,1")
        runs, node0 = [run], wd
    else:
        port = str(free_port())
        runs = []
        for node in (0, 1):
            wd = base / name / f"node-{node}"
            pet = {"PET_NNODES": "2", "PET_NODE_RANK": str(node), "PET_MASTER_ADDR": "127.0.0.1",
                   "PET_MASTER_PORT": port}  # fmt: skip
            runs.append(_start(wd, _config(wd, prefix, epochs, imgsz, batch, name, ranks=1), str(node), **pet))
        node0 = base / name / "node-0"
    rcs = [tr.finish(r, 1200) for r in runs]
    if any(rcs):
        raise RuntimeError(f"{kind} exited {rcs}; see {base / name}")
    epoch = _steady_epoch_seconds(node0 / "work" / "runs" / "run" / "results.csv")
    startup = max(_ranks_up(r) + r.started - runs[0].started for r in runs)
    shutil.rmtree(base / name, ignore_errors=True)
    return epoch, startup


def run(images: int = 120, epochs: int = 4, imgsz: int = 64, batch: int = 16, repeats: int = 2) -> list[Row]:
    bed_up()
    tr.ensure_output_bucket()
    _, prefix = tr.prepare_dataset(images)
    base = testbed.TESTBED / "bench" / f"multinode-{uuid.uuid4().hex[:6]}"
    res: dict[str, dict[str, list[float]]] = {k: {"epoch": [], "startup": []} for k in (ONE_POD, TWO_PODS)}
    for r in range(repeats):
        for kind in (ONE_POD, TWO_PODS) if r % 2 == 0 else (TWO_PODS, ONE_POD):
            t0 = time.monotonic()
            epoch, startup = run_once(kind, base, prefix, epochs, imgsz, batch)
            res[kind]["epoch"].append(epoch)
            res[kind]["startup"].append(startup)
            log(f"repeat {r + 1}: {kind}: {epoch:.2f} s per epoch, ranks up after {startup:.1f} s "
                f"({time.monotonic() - t0:.0f} s in all)")  # fmt: skip
    shutil.rmtree(base, ignore_errors=True)
    tr.delete_prefix(f"{tr.OUTPUT}bench/")
    e = median(res[TWO_PODS]["epoch"]), median(res[ONE_POD]["epoch"])
    s = median(res[TWO_PODS]["startup"]), median(res[ONE_POD]["startup"])
    spread = "; ".join(f"{k}: epoch " + "/".join(f"{x:.2f}" for x in v["epoch"]) + " s, start-up "
                       + "/".join(f"{x:.1f}" for x in v["startup"]) + " s" for k, v in res.items())  # fmt: skip
    note = (f"gloo on CPU, world size 2, {images} images 640x480, yolov8n.yaml, {epochs} epochs, imgsz {imgsz}, "
            f"batch {batch}; {repeats} repeats interleaved, medians; all runs: {spread}")  # fmt: skip
    return [
        Row(f"epoch time, {TWO_PODS} (2-node Indexed Job's launch path) vs {ONE_POD}", f"{e[0]:.2f} s",
            f"{e[1]:.2f} s", fmt_ratio(*e), "<= 1.15x", "yes" if e[0] <= 1.15 * e[1] else "no", note),
        Row(f"start-up to the whole world up (staging, rendezvous, process group), {TWO_PODS} vs {ONE_POD}",
            f"{s[0]:.1f} s", f"{s[1]:.1f} s", fmt_ratio(*s), "-", "n/a",
            "each pod stages the dataset itself; the later pod counts"),
    ]


def main(argv: list[str] | None = None) -> list[Row]:
    return training_bench_main(__doc__, run, argv, images=120, epochs=4, repeats=2)


if __name__ == "__main__":
    main()
