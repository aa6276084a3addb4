"""The training process: ``python -m yolo_trainer.child SPEC.json``, started by the supervisor.

It runs Ultralytics and nothing else: on CPU or one GPU in this process, on N GPUs through Ultralytics' own
DDP launcher (which starts the ranks as its own children). It talks to the supervisor only through files in a
control directory, so the same path works on every rank layout: Ultralytics cloudpickles the callbacks into
its DDP ranks, where a thread, a socket or a reporter could not follow, but a path can. Only rank 0 writes.

Control directory (the supervisor's ``supervisor.py`` reads it):

- ``saved.json``: written (atomically) after Ultralytics finished writing ``last.pt`` for an epoch, with the
  file's signature at that moment. The supervisor copies the file only while it still has that signature, so
  never once the next epoch's rewrite has begun.
- ``stop``: created by the supervisor on ``spec.stop``; training ends after the current epoch, and
  ``stopped.json`` records which one.
- ``final.json``: the final validation of ``best.pt`` and the run directory, after the last epoch.
- ``error.json``: the classified failure (exit code and message) when training raised.

SIGTERM is not handled here: the supervisor forwards it, this process dies at once (its GPU memory freed),
and the supervisor flushes the newest complete checkpoint it already holds.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

SAVED = "saved.json"
STOP = "stop"
STOPPED = "stopped.json"
FINAL = "final.json"
ERROR = "error.json"

log = logging.getLogger("yolo_trainer.child")


def write_json(path: Path, body: dict[str, Any]) -> None:
    """Readers see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, default=_plain))
    tmp.replace(path)


def _plain(v: Any) -> Any:
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


def file_signature(path: Path) -> list[int]:
    """What an in-place rewrite changes (truncation and writes update mtime and ctime)."""
    st = path.stat()
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _rank0() -> bool:
    return int(os.environ.get("RANK", "-1")) in (-1, 0)


class ControlCallbacks:
    """Ultralytics callbacks writing the control files. Plain attributes only: cloudpickle carries it into DDP
    ranks by value of ``control``."""

    def __init__(self, control: Path):
        self.control = str(control)

    def attach(self, model) -> None:
        model.add_callback("on_train_epoch_end", self.on_train_epoch_end)
        model.add_callback("on_model_save", self.on_model_save)
        model.add_callback("on_fit_epoch_end", self.on_fit_epoch_end)
        model.add_callback("on_train_end", self.on_train_end)

    def _stop_if_requested(self, trainer) -> None:
        # Rank 0 decides; Ultralytics broadcasts trainer.stop to the other ranks at the end of the epoch.
        if _rank0() and not trainer.stop and (Path(self.control) / STOP).exists():
            trainer.stop = True
            write_json(Path(self.control) / STOPPED, {"epoch": trainer.epoch + 1})
            log.warning("stop requested: training ends after epoch %d", trainer.epoch + 1)

    def on_train_epoch_end(self, trainer) -> None:
        self._stop_if_requested(trainer)  # before validation: this epoch is validated and saved as the last

    def on_fit_epoch_end(self, trainer) -> None:
        self._stop_if_requested(trainer)  # a request that came during validation

    def on_model_save(self, trainer) -> None:
        if _rank0():
            # The file as it was when complete: by the time the supervisor looks, the next save may be under way.
            saved = {"epoch": trainer.epoch, "epochs": trainer.epochs, "stop": bool(trainer.stop),
                     "signature": file_signature(Path(trainer.last))}  # fmt: skip
            write_json(Path(self.control) / SAVED, {**saved, "last": str(trainer.last), "csv": str(trainer.csv)})

    def on_train_end(self, trainer) -> None:
        if _rank0():
            metrics = {k: _plain(v) for k, v in dict(trainer.metrics or {}).items()}
            write_json(Path(self.control) / FINAL, {"metrics": metrics, "saveDir": str(trainer.save_dir)})


def train(spec: dict[str, Any]) -> None:
    from ultralytics import YOLO
    from yolo_contract.exitcodes import ModelUnavailable

    try:
        model = YOLO(spec["model"])
    except Exception as e:
        raise ModelUnavailable(f"cannot load model {spec['model']}: {e}") from e
    ControlCallbacks(Path(spec["control"])).attach(model)
    kwargs = spec["kwargs"]
    if spec.get("resume"):
        model.train(resume=True, **{k: kwargs[k] for k in ("data", "device", "workers") if k in kwargs})
    else:
        model.train(**kwargs)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=os.environ.get("YOLO_TRAINER_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    spec = json.loads(Path(argv[0]).read_text())
    try:
        train(spec)
    except BaseException as e:
        from yolo_contract.exitcodes import ExitCode

        from .cli import classify

        code, message = classify(e)
        if code == ExitCode.TRAINING_ERROR:
            log.exception("training failed")
        write_json(Path(spec["control"]) / ERROR, {"code": int(code), "message": message})
        return int(code)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
