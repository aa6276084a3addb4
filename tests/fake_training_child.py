"""A stand-in for ``yolo_trainer.child`` that speaks its control-file protocol without Ultralytics, so the
supervisor's tests control every moment: ``python fake_training_child.py SPEC.json``.

SPEC: {"control", "save_dir", "epochs", "epoch_seconds", "torn_at" (epoch index whose last.pt write stops
half-way and hangs), "exit" (exit code after the last epoch), "error" (an error.json body), "print" (a line
printed before exiting), "bar" (printed without a newline before the torn write)}. last.pt is a pickle of
{"epoch": i, "blob": ...}: a complete one loads, a torn one does not. (No torch: these tests stay fast.)
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from pathlib import Path

from yolo_trainer import child

HEADER = "epoch,time,train/box_loss,train/cls_loss,train/dfl_loss,metrics/precision(B),metrics/recall(B),"
HEADER += "metrics/mAP50(B),metrics/mAP50-95(B)\n"


def checkpoint_bytes(epoch: int) -> bytes:
    return pickle.dumps({"epoch": epoch, "blob": os.urandom(2_000_000)})


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    control, save = Path(spec["control"]), Path(spec["save_dir"])
    (save / "weights").mkdir(parents=True, exist_ok=True)
    csv, last = save / "results.csv", save / "weights" / "last.pt"
    epochs = spec["epochs"]
    t0 = time.monotonic()
    for i in range(spec.get("start", 0), epochs):
        time.sleep(spec.get("epoch_seconds", 0.1))
        stop = (control / child.STOP).exists()
        if stop:
            child.write_json(control / child.STOPPED, {"epoch": i + 1})
        m = 0.1 + 0.01 * i
        with open(csv, "a") as f:
            if f.tell() == 0:
                f.write(HEADER)
            f.write(f"{i + 1},{time.monotonic() - t0:.3f},1.0,2.0,3.0,0.5,0.4,{m + 0.2:.3f},{m:.3f}\n")
        data = checkpoint_bytes(i)
        if spec.get("torn_at") == i:
            if spec.get("bar"):  # a progress bar line, unfinished when the child is killed
                sys.stdout.write(spec["bar"])
                sys.stdout.flush()
            with open(last, "wb") as f:  # as Ultralytics' write_bytes: truncate, then write
                f.write(data[: len(data) // 2])
                f.flush()
                (control / "torn-write-started").touch()
                time.sleep(3600)
        last.write_bytes(data)
        saved = {"epoch": i + 1, "epochs": epochs, "stop": stop or i + 1 == epochs, "last": str(last), "csv": str(csv),
                 "signature": child.file_signature(last)}  # fmt: skip
        child.write_json(control / child.SAVED, saved)
        if stop:
            break
    child.write_json(control / child.FINAL, {"metrics": {"metrics/mAP50-95(B)": 0.77}, "saveDir": str(save)})
    if spec.get("error"):
        child.write_json(control / child.ERROR, spec["error"])
    if spec.get("print"):
        print(spec["print"], flush=True)
    return int(spec.get("exit", 0))


if __name__ == "__main__":
    sys.exit(main())
