"""The GPU check (`make gpu-check`): for a machine with CUDA GPUs; skipped cleanly where there is none.

    .venv/bin/python bench/gpu.py [--images 400] [--epochs 3] [--imgsz 640] [--batch 16]

On a machine with GPUs (and the test bed's S3 up: it runs `make testbed-up` first):
- one GPU: `yolo-trainer` (supervisor + training process, checkpoint upload every epoch) against plain
  `yolo train` with the same arguments, both at the workers and the `/dev/shm` size the operator computes for
  one GPU (`yolo_contract.sizing`): each runs in its own mount namespace with a tmpfs of exactly that size on
  /dev/shm, so a DataLoader that outgrows it dies with the Bus error users see. Images/s from Ultralytics' own
  clock (the `time` column of results.csv).
- more than one GPU: `yolo-trainer` with DDP over all of them, launched as every multi-process job is: the
  supervisor starts torch's launcher (`torch.distributed.run`, PET_* settings) with one rank per GPU (NCCL);
  the row says the world size and the ranks that reported in, and whether per-epoch progress (from global
  rank 0 only) and a committed checkpoint (checkpoints/state.json) appeared in S3 while it ran, and whether
  every rank took part in the final validation.
  (One GPU is one process: no launcher, the same path as CPU. Several ranks cannot share one GPU under NCCL,
  so a one-GPU machine checks the launcher's path only on CPU, in tests/integration/test_trainer_ranks.py.)
Prints one table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "contract" / "src"))

from bench.common import VENV_BIN, Row, bed_up, fmt_ratio, log, testbed


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        return 0


def in_shm_namespace(cmd: list[str], shm_bytes: int) -> list[str]:
    """``cmd`` in a private mount namespace whose /dev/shm is a tmpfs of ``shm_bytes`` (as the pod's emptyDir
    with medium Memory and sizeLimit); unchanged where unshare or root is missing (the table says so)."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return cmd
    script = f'mount -t tmpfs -o size={shm_bytes} tmpfs /dev/shm && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *cmd]


def run(images: int = 400, epochs: int = 3, imgsz: int = 640, batch: int = 16) -> list[Row]:
    n = gpu_count()
    if n == 0:
        log("no GPU here: GPU check skipped")
        return [Row("GPU check", "-", "-", "-", "-", "skipped", "no CUDA device here")]
    from yolo_contract.sizing import planned_workers, pod_shm_bytes

    from bench import trainer_runs as tr

    bed_up()
    tr.ensure_output_bucket()
    data_yaml, prefix = tr.prepare_dataset(images)
    base = testbed.TESTBED / "bench" / f"gpu-{uuid.uuid4().hex[:6]}"
    workers = planned_workers(None, 1)
    shm = pod_shm_bytes(None, 1, batch, imgsz)
    isolated = os.geteuid() == 0 and shutil.which("unshare") is not None
    shm_note = f"/dev/shm {shm / 2**20:.0f} MiB" + ("" if isolated else " (not enforced: needs root and unshare)")
    rows: list[Row] = []

    # --- one GPU: trainer vs plain yolo train -----------------------------------------------------------
    cfg_path = tr.trainer_config(base / "trainer", prefix, epochs, imgsz, batch)
    cfg = json.loads(cfg_path.read_text())
    cfg["training"]["workers"] = workers
    cfg["gpus"] = 1
    cfg_path.write_text(json.dumps(cfg))
    env1 = {"CUDA_VISIBLE_DEVICES": "0"}
    t_run = tr.start(in_shm_namespace([str(VENV_BIN / "yolo-trainer"), "--config", str(cfg_path)], shm),
                     {**tr.base_env(base / "trainer"), **env1}, base / "trainer" / "trainer.log")  # fmt: skip
    rc_t = tr.finish(t_run, 3600)
    (base / "yolo").mkdir(parents=True, exist_ok=True)
    copy = base / "yolo" / "dataset"
    shutil.copytree(data_yaml.parent, copy, ignore=shutil.ignore_patterns("*.cache", ".complete"))
    args = tr.yolo_cli_args(copy / data_yaml.name, base / "yolo" / "runs", epochs, imgsz, batch)
    args = [a.replace("workers=0", f"workers={workers}").replace("device=cpu", "device=0") for a in args]
    y_run = tr.start(in_shm_namespace(args, shm), {**tr.base_env(base / "yolo"), **env1}, base / "yolo" / "yolo.log")
    rc_y = tr.finish(y_run, 3600)
    if rc_t or rc_y:
        logs = [(base / k / f"{k}.log") for k in ("trainer", "yolo")]
        tails = " | ".join(p.read_text(errors="replace")[-1500:] for p in logs if p.exists())
        rows.append(Row("one GPU", f"exit {rc_t}", f"exit {rc_y}", "-", "-", "no", tails))
    else:
        ips_t = images * epochs / tr.train_seconds(base / "trainer" / "work" / "runs" / "run" / "results.csv")
        ips_y = images * epochs / tr.train_seconds(base / "yolo" / "runs" / "run" / "results.csv")
        rows.append(Row("one GPU: images/s, yolo-trainer vs plain `yolo train`", f"{ips_t:.1f}", f"{ips_y:.1f}",
                        fmt_ratio(ips_y, ips_t), "<= 1.03x time", "yes" if ips_t * 1.03 >= ips_y else "no",
                        f"{images} images 640x480, yolov8n.yaml, {epochs} epochs, imgsz {imgsz}, batch {batch}, "
                        f"{workers} workers, {shm_note}; no Bus error"))  # fmt: skip

    # --- all GPUs: DDP through the supervisor -----------------------------------------------------------
    if n > 1:
        from bench.staging import s3_client

        name = f"ddp-{uuid.uuid4().hex[:6]}"
        cfg_path = tr.trainer_config(base / "ddp", prefix, max(epochs, 3), imgsz, batch * n, name=name)
        cfg = json.loads(cfg_path.read_text())
        cfg["training"]["workers"] = workers
        cfg["gpus"] = n
        cfg_path.write_text(json.dumps(cfg))
        shm_n = pod_shm_bytes(None, n, batch * n, imgsz)
        d_run = tr.start(in_shm_namespace([str(VENV_BIN / "yolo-trainer"), "--config", str(cfg_path)], shm_n),
                         tr.base_env(base / "ddp"), base / "ddp" / "trainer.log")  # fmt: skip
        c, bucket = s3_client(), tr.OUTPUT[5:].strip("/")
        state_key = f"bench/{name}/checkpoints/state.json"
        seen_ckpt = None
        while d_run.proc.poll() is None:
            with contextlib.suppress(Exception):
                seen_ckpt = json.loads(c.get_object(Bucket=bucket, Key=state_key)["Body"].read())["epoch"]
            time.sleep(2)
        epochs_seen = [e for e, _ in d_run.epoch_times()]
        ranks = sorted((ev["rank"], ev.get("backend")) for _, ev in d_run.events if ev.get("event") == "rank")
        validated = sorted(ev["rank"] for _, ev in d_run.events if ev.get("event") == "finalValidation")
        launch = next((ev for _, ev in d_run.events if ev.get("event") == "ranks"), {})
        ok = (d_run.proc.returncode == 0 and epochs_seen == sorted(set(epochs_seen)) and bool(epochs_seen)
              and seen_ckpt is not None and [r for r, _ in ranks] == list(range(n)) and validated == list(range(n)))
        rows.append(Row(f"DDP on {n} GPUs through torchrun: progress and a checkpoint during the run",
                        f"epochs reported {epochs_seen}; checkpoint epoch {seen_ckpt}; ranks {ranks}; "
                        f"final validation on ranks {validated}", "-", "-",
                        "progress + checkpoint, every rank", "yes" if ok else "no",
                        f"exit {d_run.proc.returncode}, launcher {launch.get('launcher')}, world size "
                        f"{launch.get('worldSize')}, batch {batch * n}, "
                        f"/dev/shm {shm_n / 2**20:.0f} MiB"))  # fmt: skip
    tr.delete_prefix(f"{tr.OUTPUT}bench/")
    return rows


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--batch", type=int, default=16)
    a = ap.parse_args(argv)
    rows = run(a.images, a.epochs, a.imgsz, a.batch)
    print("| figure | ours | baseline | ratio | goal | met | note |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r.figure} | {r.ours} | {r.baseline} | {r.ratio} | {r.goal} | {r.met} | {r.note} |")
    return rows


if __name__ == "__main__":
    main()
