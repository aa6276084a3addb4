"""Checkpoints in S3: a background uploader (newest wins) and the resume lookup.

Layout under ``<job_prefix>/checkpoints/``::

    e000004/last.pt, e000004/results.csv   immutable, one folder per epoch (named by epochs completed)
    state.json                             {"epoch", "uri", "results", "runId", "fingerprint", ...}

``state.json`` is the commit marker and is written LAST, after both objects of its epoch exist; the previous
epoch's folder is deleted only after that. So a resume reads state.json and downloads exactly the objects it
names, which are complete (S3 PUT is atomic) and belong together, whatever moment the pod died at. A fixed
``checkpoints/last.pt`` key could not give that: after a crash between the PUT of last.pt and the PUT of
state.json, state.json would describe a different version than the object under its name.

The uploader never uploads a file Ultralytics may still be writing: the supervisor calls ``submit`` when the
training process reports that it finished writing last.pt (its ``saved.json``), and ``submit`` copies last.pt
and results.csv (its rows up to that epoch) into a per-epoch staging folder at once, dropping the checkpoint if
the file changed during the copy (Ultralytics rewrites it in place at the end of the next epoch). The copy runs
in the supervisor, not in the training process, so training never waits for it; the staged copy is what a
SIGTERM flush uploads even if the training process was killed in the middle of rewriting last.pt. If an upload
is in flight when a newer checkpoint arrives, only the newest waiting one is uploaded next.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolo_contract.exitcodes import S3AccessDenied, S3Unavailable, TrainerError

from .child import file_signature
from .results import results_through
from .s3 import S3Store, join_key, parse_s3_uri, s3_uri

log = logging.getLogger(__name__)

STATE_JSON = "state.json"


def config_fingerprint(cfg) -> str:
    """What must be equal for a checkpoint to be resumable by this config (model, data, training args). The model
    counts as its text, the string the config carried before it was typed: a checkpoint stays resumable across
    that change."""
    basis = {
        "model": cfg.model.text,
        "dataset": cfg.dataset,
        "training": cfg.training.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CheckpointState:
    epoch: int  # epochs completed when it was saved (results.py: the trainer's one epoch convention)
    uri: str
    results: str | None
    run_id: str
    fingerprint: str

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "epoch": self.epoch,
                "uri": self.uri,
                "results": self.results,
                "runId": self.run_id,
                "fingerprint": self.fingerprint,
                "savedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            indent=1,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> CheckpointState:
        d = json.loads(data)
        return cls(
            int(d["epoch"]),
            str(d["uri"]),
            d.get("results"),
            str(d.get("runId", "")),
            str(d.get("fingerprint", "")),
        )


def epoch_folder(epoch: int) -> str:
    """Folder of the checkpoint saved when ``epoch`` epochs were done (e000003: 3 done)."""
    return f"e{epoch:06d}"


@dataclass
class _Pending:
    epoch: int
    folder: Path  # holds last.pt (and results.csv), staged by submit


def copy_unchanged(src: Path, dst: Path, expected: list[int] | None = None) -> bool:
    """Copies ``src``; False if it changed during the copy, or no longer is the version ``expected``
    (its :func:`~yolo_trainer.child.file_signature` when it was complete)."""
    try:
        before = file_signature(src)
        if expected is not None and before != list(expected):
            return False
        shutil.copyfile(src, dst)
        return file_signature(src) == before
    except FileNotFoundError:
        return False


class CheckpointUploader:
    """Background thread; ``submit`` is cheap and never blocks on S3."""

    def __init__(
        self, store: S3Store, job_prefix: str, staging: Path, run_id: str, fingerprint: str, on_uploaded=None
    ):
        self.store = store
        self.bucket, prefix = parse_s3_uri(job_prefix)
        self.prefix = join_key(prefix, "checkpoints")
        self.staging = staging
        self.run_id, self.fingerprint = run_id, fingerprint
        self.on_uploaded = on_uploaded
        self._cv = threading.Condition()
        self._pending: _Pending | None = None
        self._busy = False
        self._closed = False
        self.error: TrainerError | None = None  # fatal (access denied): the training thread re-raises it
        self.uploaded: CheckpointState | None = None
        self._thread = threading.Thread(target=self._loop, name="ckpt-upload", daemon=True)
        self._thread.start()

    def submit(
        self, epoch: int, last_pt: Path, results_csv: Path | None, signature: list[int] | None = None
    ) -> bool:
        """Stages for upload the checkpoint saved when ``epoch`` epochs were done; False if last.pt is no longer
        the version ``signature`` names or changed while it was copied."""
        folder = self.staging / epoch_folder(epoch)
        tmp = self.staging / f".{epoch_folder(epoch)}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if not copy_unchanged(last_pt, tmp / "last.pt", signature):
            log.info("checkpoint of epoch %d changed while it was staged; skipped", epoch)
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        if results_csv is not None and results_csv.is_file():
            text = results_csv.read_text(errors="replace")
            (tmp / "results.csv").write_text(results_through(text, epoch))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)  # the staged folder appears complete or not at all
        job = _Pending(epoch, folder)
        with self._cv:
            old, self._pending = self._pending, job
            self._cv.notify_all()
        if old is not None:  # superseded before it was uploaded: newest wins
            log.info("checkpoint of epoch %d superseded by epoch %d before upload", old.epoch, epoch)
            shutil.rmtree(old.folder, ignore_errors=True)
        return True

    def _loop(self) -> None:
        while True:
            with self._cv:
                while self._pending is None and not self._closed:
                    self._cv.wait()
                if self._pending is None and self._closed:
                    return
                job, self._pending = self._pending, None
                self._busy = True
            try:
                self._upload(job)
            except (S3AccessDenied, TrainerError) as e:
                level = logging.WARNING if isinstance(e, S3Unavailable) else logging.ERROR
                log.log(level, "checkpoint upload of epoch %d failed: %s", job.epoch, e)
                if not isinstance(e, S3Unavailable):
                    self.error = e
            except Exception as e:  # never kill the thread silently
                log.exception("checkpoint upload of epoch %d failed", job.epoch)
                self.error = TrainerError(f"checkpoint upload failed: {e}")
            finally:
                shutil.rmtree(job.folder, ignore_errors=True)
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _upload(self, job: _Pending) -> None:
        folder_key = join_key(self.prefix, epoch_folder(job.epoch))
        ckpt_key = f"{folder_key}/last.pt"
        self.store.upload_file(job.folder / "last.pt", self.bucket, ckpt_key, "application/octet-stream")
        results_uri = None
        if (job.folder / "results.csv").is_file():
            self.store.upload_file(
                job.folder / "results.csv", self.bucket, f"{folder_key}/results.csv", "text/csv"
            )
            results_uri = s3_uri(self.bucket, f"{folder_key}/results.csv")
        state = CheckpointState(
            job.epoch, s3_uri(self.bucket, ckpt_key), results_uri, self.run_id, self.fingerprint
        )
        self.store.put_bytes(self.bucket, join_key(self.prefix, STATE_JSON), state.to_json())  # commit
        previous, self.uploaded = self.uploaded, state
        log.info("checkpoint of epoch %d uploaded to %s", job.epoch, state.uri)
        if previous is not None and previous.epoch != state.epoch:
            self._delete_epoch(previous.epoch)
        if self.on_uploaded is not None:
            try:
                self.on_uploaded(state)
            except Exception:
                log.exception("on_uploaded callback failed")

    def _delete_epoch(self, epoch: int) -> None:
        folder_key = join_key(self.prefix, epoch_folder(epoch))
        for name in ("last.pt", "results.csv"):
            try:
                self.store.delete(self.bucket, f"{folder_key}/{name}")
            except Exception as e:  # garbage is harmless: state.json does not name it
                log.warning("could not delete old checkpoint %s/%s: %s", folder_key, name, e)

    def flush(self, timeout: float) -> bool:
        """Waits until nothing is pending or in flight; False if ``timeout`` seconds passed first."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._pending is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, timeout: float = 0) -> bool:
        ok = self.flush(timeout) if timeout else True
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        return ok

    def finish(self) -> None:
        """After the last epoch: drops the checkpoint still waiting (the final outputs follow at once) and waits
        for the upload in flight, however long its retries take (each S3 call is bounded by the retry budget).

        So nothing is written under checkpoints/ once this returns: an upload still running while the outputs
        are published could re-create state.json after ``delete_all`` and make a re-created job of the same
        name resume a finished run.
        """
        with self._cv:
            dropped, self._pending = self._pending, None
            self._closed = True
            self._cv.notify_all()
        if dropped is not None:
            shutil.rmtree(dropped.folder, ignore_errors=True)
        self._thread.join()

    def delete_all(self) -> None:
        """After a successful run: a re-created job of the same name must start fresh, not resume."""
        try:
            self.store.delete(self.bucket, join_key(self.prefix, STATE_JSON))  # uncommit first
            for obj in self.store.list(self.bucket, self.prefix + "/"):
                self.store.delete(self.bucket, obj.key)
        except Exception as e:
            log.warning("could not clean up checkpoints: %s", e)


def read_state(store: S3Store, job_prefix: str) -> CheckpointState | None:
    bucket, prefix = parse_s3_uri(job_prefix)
    raw = store.get_bytes_or_none(bucket, join_key(prefix, "checkpoints", STATE_JSON))
    if raw is None:
        return None
    try:
        return CheckpointState.from_json(raw)
    except (ValueError, KeyError, TypeError) as e:
        log.warning("ignoring unreadable checkpoints/state.json: %s", e)
        return None


def rewrite_train_args(ckpt_path: Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Points a downloaded checkpoint's ``train_args`` at this pod's paths.

    The dataset and run dir are re-staged on every pod.

    Ultralytics' resume rebuilds its whole config from ``train_args`` and only lets a few keys be overridden;
    ``save_dir``/``data``/``project`` there are paths on the pod that wrote the checkpoint.
    """
    import torch

    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "train_args" not in ckpt:
        raise TrainerError(f"{ckpt_path} is not an Ultralytics training checkpoint")
    ckpt["train_args"] = {**ckpt["train_args"], **updates}
    tmp = ckpt_path.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    tmp.replace(ckpt_path)
    return ckpt["train_args"]
