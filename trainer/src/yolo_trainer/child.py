"""The training process: ``python -m yolo_trainer.child SPEC.json``, started by the supervisor.

It runs Ultralytics and nothing else: on CPU or one GPU as this one process; with several ranks (GPUs, CPU
processes, nodes) as each rank that torch's launcher (``torch.distributed.run``, started by the supervisor)
starts, training with :class:`yolo_trainer.ranks.LaunchedRankTrainer`. It talks to the supervisor only through
files in a control directory, which only global rank 0 writes (``RANK`` 0, not ``LOCAL_RANK``: once per world,
not once per node); a rank that fails writes ``error.rank<N>.json`` beside it.

Control directory (the supervisor's ``supervisor.py`` reads it):

- ``saved.json``: written (atomically) after Ultralytics finished writing ``last.pt`` for an epoch, with the
  file's signature at that moment. The supervisor copies the file only while it still has that signature, so
  never once the next epoch's rewrite has begun.
- ``stop``: created by the supervisor on ``spec.stop``; training ends after the current epoch, and
  ``stopped.json`` records which one.
- ``final.json``: the final validation of ``best.pt`` and the run directory, after the last epoch.
- ``error.json``: the classified failure (exit code and message) when training raised (rank 0, or the only
  process); ``error.rank<N>.json`` for another rank. A rank of a multi-node world whose connection to another
  rank broke exits PeerLost (``classify.peer_error``); the supervisor decides whether the pod's run ended for
  that reason or for one of its own ranks' failures.

SIGTERM is not handled here: the supervisor forwards it (to every rank), this process dies at once (its GPU
memory freed), and the supervisor flushes the newest complete checkpoint it already holds. A rank dies with
its launcher (``PR_SET_PDEATHSIG``), so no rank outlives the pod's supervisor.
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
RANK_ERROR = "error.rank{rank}.json"

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


def launched() -> bool:
    """Whether this process is one of several ranks started by torch's launcher."""
    return "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def error_file_name() -> str:
    """Where this process records its classified failure."""
    return ERROR if _rank0() else RANK_ERROR.format(rank=int(os.environ["RANK"]))


class ControlCallbacks:
    """Ultralytics callbacks writing the control files; they run on every rank, and write on rank 0 only."""

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
            # Ultralytics counts epochs from 0; from here on an epoch is a count of epochs done (results.py).
            saved = {"epoch": trainer.epoch + 1, "epochs": trainer.epochs, "stop": bool(trainer.stop),
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
    kwargs = dict(spec["kwargs"])
    if spec.get("resume"):
        kwargs = {"resume": True, **{k: kwargs[k] for k in ("data", "device", "workers") if k in kwargs}}
    if launched():
        from .ranks import trainer_class

        kwargs["trainer"] = trainer_class(model.task_map[model.task]["trainer"])
    model.train(**kwargs)


def _die_with_launcher() -> None:
    """A rank gets SIGKILL when its launcher dies (the launcher itself dies with the supervisor), so a
    SIGKILLed supervisor leaves no rank behind. The launcher starts each rank in a session of its own."""
    import contextlib
    import ctypes
    import signal

    parent = os.getppid()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the launcher died before the line above
        os._exit(1)


def _record_for_launcher(e: BaseException) -> None:
    """The launcher's per-rank error file (``TORCHELASTIC_ERROR_FILE``), so its failure report carries this
    rank's error rather than just an exit code."""
    if not os.environ.get("TORCHELASTIC_ERROR_FILE") or not isinstance(e, Exception):
        return
    try:
        from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

        ErrorHandler().record_exception(e)
    except Exception:  # reporting the error must not hide it
        log.debug("could not record the error for the launcher", exc_info=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=os.environ.get("YOLO_TRAINER_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip
    spec = json.loads(Path(argv[0]).read_text())
    if launched():
        _die_with_launcher()
    try:
        train(spec)
    except BaseException as e:
        from yolo_contract.exitcodes import ExitCode

        from .classify import classify

        code, message = classify(e, nodes=int(os.environ.get("GROUP_WORLD_SIZE", "1")))
        if code == ExitCode.TRAINING_ERROR:
            log.exception("training failed")
        elif code == ExitCode.PEER_LOST:
            log.warning("%s", message)
        write_json(Path(spec["control"]) / error_file_name(), {"code": int(code), "message": message})
        _record_for_launcher(e)
        return int(code)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
