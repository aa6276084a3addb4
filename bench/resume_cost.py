"""Resume cost: SIGKILL `yolo-trainer` in the middle of an epoch, start it again, and measure the work lost and
the time to the first resumed epoch against a fresh start.

    .venv/bin/python bench/resume_cost.py [--images 240] [--epochs 5] [--kill-after 2] [--repeats 3]

Per repeat: a fresh run (new job name) is started; after its `--kill-after`-th epoch event it runs half a mean
epoch more and gets SIGKILL (no flush: that is what an OOM kill or a lost node does). The same config is
started again: it reads checkpoints/state.json, downloads last.pt, re-stages the dataset and resumes.
- epochs redone = epochs completed before the kill - epochs the resumed run starts after (goal <= 1);
- time to the first epoch: spawn -> first epoch event, fresh run (epoch 1) vs resumed run (its first epoch).
Fresh and resumed runs are measured in the same repeat, one after the other (the resumed run needs the fresh
one's checkpoint); medians over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import trainer_runs as tr
from bench.common import Row, bed_up, fmt_ratio, log, median, testbed


def is_epoch(ev: dict) -> bool:
    return ev.get("event") == "epoch"


def one(base: Path, prefix: str, epochs: int, kill_after: int, imgsz: int, batch: int) -> dict:
    name = f"resume-{uuid.uuid4().hex[:8]}"
    wd = base / name
    cfg = tr.trainer_config(wd, prefix, epochs, imgsz, batch, name=name)
    fresh = tr.start_trainer(wd / "fresh", cfg)
    got = fresh.wait_event(lambda ev: is_epoch(ev) and ev["epoch"] >= kill_after, 600)
    if got is None:
        raise RuntimeError(f"the fresh run never reached epoch {kill_after}; see {wd}")
    times = fresh.epoch_times()
    first_fresh = times[0][1]
    per_epoch = (times[-1][1] - times[0][1]) / max(1, len(times) - 1) if len(times) > 1 else times[0][1]
    time.sleep(per_epoch / 2)
    done_before_kill = max(e for e, _ in fresh.epoch_times())
    os.killpg(fresh.proc.pid, signal.SIGKILL)
    t_kill = time.monotonic()
    fresh.proc.wait()
    resumed = tr.start_trainer(wd / "resumed", cfg)
    got = resumed.wait_event(is_epoch, 600)
    if got is None:
        raise RuntimeError(f"the resumed run reported no epoch; see {wd}")
    ev_resume = next((ev for _, ev in resumed.events if ev.get("event") == "resume"), None)
    first_resumed = got[0] - resumed.started
    resumed_epoch = got[1]["epoch"]
    os.killpg(resumed.proc.pid, signal.SIGKILL)
    resumed.proc.wait()
    from_epoch = ev_resume["fromEpoch"] if ev_resume else 0  # epochs already done per the checkpoint
    res = {
        "done_before_kill": done_before_kill,
        "checkpoint_epochs": from_epoch,
        "redone": done_before_kill - from_epoch,
        "first_epoch_fresh": first_fresh,
        "first_epoch_resumed": first_resumed,
        "resumed_epoch": resumed_epoch,
        "per_epoch": per_epoch,
        "kill_to_first_resumed": got[0] - t_kill,
    }
    log(f"{name}: {json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in res.items()})}")
    tr.delete_prefix(f"{tr.OUTPUT}bench/{name}/")
    return res


def run(images: int = 240, epochs: int = 5, kill_after: int = 2, imgsz: int = 64, batch: int = 16,
        repeats: int = 3) -> list[Row]:  # fmt: skip
    bed_up()
    tr.ensure_output_bucket()
    _, prefix = tr.prepare_dataset(images)
    base = testbed.TESTBED / "bench" / f"resume-{uuid.uuid4().hex[:6]}"
    results = [one(base, prefix, epochs, kill_after, imgsz, batch) for _ in range(repeats)]
    shutil.rmtree(base, ignore_errors=True)
    redone = [r["redone"] for r in results]
    fresh = median([r["first_epoch_fresh"] for r in results])
    resumed = median([r["first_epoch_resumed"] for r in results])
    note = (f"{images} images, yolov8n.yaml, imgsz {imgsz}, CPU; SIGKILL half an epoch after epoch {kill_after}; "
            f"{repeats} repeats, medians; runs: " + "; ".join(
                f"killed after {r['done_before_kill']} done, resumed from {r['checkpoint_epochs']}, "
                f"first epoch {r['first_epoch_fresh']:.1f}s fresh / {r['first_epoch_resumed']:.1f}s resumed"
                for r in results))  # fmt: skip
    return [
        Row("epochs redone after SIGKILL mid-epoch (completed before the kill - resumed from)",
            f"max {max(redone)} (runs: {'/'.join(map(str, redone))})", "-", "-", "<= 1",
            "yes" if max(redone) <= 1 else "no", "the epoch in progress is lost by design; this counts finished "
            "epochs that had to be trained again"),
        Row("spawn -> first epoch done: resumed run vs fresh start", f"{resumed:.1f} s", f"{fresh:.1f} s",
            fmt_ratio(resumed, fresh), "<= 1.20x", "yes" if resumed <= 1.2 * fresh else "no", note),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> list[Row]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--kill-after", type=int, default=2)
    ap.add_argument("--imgsz", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    rs = run(a.images, a.epochs, a.kill_after, a.imgsz, a.batch, a.repeats)
    for r in rs:
        print(r.line())
    return rs


if __name__ == "__main__":
    main()
