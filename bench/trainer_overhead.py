"""Trainer overhead: `yolo-trainer` (staging from S3, hooks, per-epoch checkpoint upload to S3) against the plain
Ultralytics CLI `yolo train` on the same data, model and arguments.

    .venv/bin/python bench/trainer_overhead.py [--images 240] [--epochs 5] [--imgsz 64] [--repeats 3]

Both train yolov8n.yaml from scratch on CPU (`workers=0`, as the trainer chooses on CPU) with the arguments
`yolo_trainer.train.train_args` produces. Runs alternate (trainer, yolo, yolo, trainer, ...), medians of
`--repeats` each. Figures:
- training phase: Ultralytics' own clock, the `time` column of the last results.csv row (start of training to
  the end of the last epoch, validation and hooks included: the trainer's checkpoint hand-off runs inside the
  epoch loop and its upload thread competes for the same CPUs), identical for both tools;
- whole process: wall time from spawn to exit (the trainer's also stages from S3, validates and publishes).
- CPU-seconds per run (less sensitive to other load than wall time): the process's own (children's rusage)
  and the test bed's S3 server's (`weed`, from /proc) during the run; the trainer's extra S3 server CPU is
  what its per-epoch checkpoint PUTs cost the shared cores (plus the staging GETs).
The dataset is the staging benchmark's generator (640x480 JPEGs) at `--images` images: 2,000 images x 5 epochs
x 6 runs does not fit the 15-minute budget of bench/run_all.py on two shared cores.
"""

from __future__ import annotations

import os
import resource
import shutil
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import trainer_runs as tr
from bench.common import Row, bed_up, fmt_ratio, log, median, testbed, training_bench_main


def server_cpu() -> float:
    """CPU-seconds the bed's S3 server (weed) has used so far; 0 if it cannot be read."""
    try:
        pid = int((testbed.TESTBED / "pids" / "weed.pid").read_text())
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(images: int = 240, epochs: int = 5, imgsz: int = 64, batch: int = 16, repeats: int = 3) -> list[Row]:
    bed_up()
    tr.ensure_output_bucket()
    data_yaml, prefix = tr.prepare_dataset(images)
    base = testbed.TESTBED / "bench" / f"overhead-{uuid.uuid4().hex[:6]}"
    res: dict[str, dict[str, list[float]]] = {
        k: {"train": [], "wall": [], "cpu": [], "s3cpu": []} for k in ("trainer", "yolo")
    }
    for r in range(repeats):
        order = ("trainer", "yolo") if r % 2 == 0 else ("yolo", "trainer")
        for kind in order:
            wd = base / f"{kind}-{r}"
            cpu0, s3cpu0 = children_cpu(), server_cpu()
            if kind == "trainer":
                cfg = tr.trainer_config(wd, prefix, epochs, imgsz, batch)
                run_ = tr.start_trainer(wd, cfg)
                csv_path = wd / "work" / "runs" / "run" / "results.csv"
            else:
                run_ = tr.start_yolo(wd, data_yaml, epochs, imgsz, batch)
                csv_path = wd / "runs" / "run" / "results.csv"
            rc = tr.finish(run_, 900)
            wall = time.monotonic() - run_.started
            if rc != 0:
                raise RuntimeError(f"{kind} exited {rc}; see {wd}")
            res[kind]["train"].append(tr.train_seconds(csv_path))
            res[kind]["wall"].append(wall)
            res[kind]["cpu"].append(children_cpu() - cpu0)
            res[kind]["s3cpu"].append(server_cpu() - s3cpu0)
            log(f"repeat {r + 1}: {kind}: training {res[kind]['train'][-1]:.1f}s, process {wall:.1f}s, "
                f"CPU {res[kind]['cpu'][-1]:.1f}s + S3 server {res[kind]['s3cpu'][-1]:.2f}s")
    # the staged copies; logs and runs stay for inspection
    for d in [*base.glob("trainer-*/work/dataset"), *base.glob("yolo-*/dataset")]:
        shutil.rmtree(d, ignore_errors=True)
    tr.delete_prefix(f"{tr.OUTPUT}bench/")
    t = median(res["trainer"]["train"]), median(res["yolo"]["train"])
    w = median(res["trainer"]["wall"]), median(res["yolo"]["wall"])
    c = median(res["trainer"]["cpu"]), median(res["yolo"]["cpu"])
    sc = median(res["trainer"]["s3cpu"]), median(res["yolo"]["s3cpu"])
    spread = "; ".join(f"{k} training " + "/".join(f"{x:.1f}" for x in v["train"]) + " s, process "
                       + "/".join(f"{x:.1f}" for x in v["wall"]) + " s" for k, v in res.items())  # fmt: skip
    note = (f"{images} images 640x480, yolov8n.yaml, {epochs} epochs, imgsz {imgsz}, batch {batch}, CPU, "
            f"{repeats} repeats interleaved, medians; all runs: {spread}")  # fmt: skip
    return [
        Row("training phase: yolo-trainer (checkpoint upload every epoch) vs plain `yolo train`",
            f"{t[0]:.1f} s", f"{t[1]:.1f} s", fmt_ratio(*t), "<= 1.03x", "yes" if t[0] <= 1.03 * t[1] else "no",
            note),
        Row("whole process (trainer: + S3 staging, validation, publish)", f"{w[0]:.1f} s", f"{w[1]:.1f} s",
            fmt_ratio(*w), "-", "n/a"),
        Row("CPU-seconds per run: process; the bed's S3 server (weed) during the run",
            f"{c[0]:.1f} s; S3 server {sc[0]:.2f} s", f"{c[1]:.1f} s; S3 server {sc[1]:.2f} s", fmt_ratio(*c),
            "-", "n/a", "all runs: " + "; ".join(f"{k} " + "/".join(f"{x:.1f}" for x in v["cpu"]) + " s + S3 "
                                                 + "/".join(f"{x:.2f}" for x in v["s3cpu"]) + " s"
                                                 for k, v in res.items())
            + "; the S3 server's CPU beyond the baseline's is the checkpoint PUTs (and staging GETs) on the "
            "same cores"),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> list[Row]:
    return training_bench_main(__doc__, run, argv, images=240, epochs=5, repeats=3)


if __name__ == "__main__":
    main()
