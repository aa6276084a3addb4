"""Lineage: what a run's results were made from (dataset, base weights, software), for status and metrics.json.

* Dataset: an archive is identified by its ETag and size; a prefix by the sha256 of every key, ETag and size
  under it (a re-upload of one image changes it, a copy of the same files elsewhere does not).
* Base weights: the URI, the object's ETag (s3://) and the sha256 of the file the trainer loaded; a parent
  TrainingJob's weights (spec.model.fromTrainingJob, typed in the config with the job the operator read them from)
  also name that job, and its run when the parent's metrics.json still lists those very bytes (same ETag).
* Software: the Ultralytics and torch versions; the image digest is the operator's (the pod's imageID, copied
  to ``status.lineage.trainerImage``), which the trainer reads back from its TrainingJob.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from yolo_contract.model_source import ModelRef, TrainingJobModel, s3_location
from yolo_contract.progress import BaseModelLineage, DatasetLineage, Lineage

from .s3 import S3Store, parse_s3_uri

log = logging.getLogger(__name__)


def _etag(etag: str | None) -> str | None:
    return etag.strip('"') if etag else None


def dataset_lineage(store: S3Store, uri: str, archive: bool) -> DatasetLineage | None:
    """The dataset's fingerprint from one LIST (best effort: None when it cannot be listed)."""
    bucket, key = parse_s3_uri(uri)
    try:
        if archive:
            objects = [o for o in store.list(bucket, key) if o.key == key]
            if not objects:
                return None
            o = objects[0]
            digest = hashlib.sha256(f"{o.key}\0{_etag(o.etag)}\0{o.size}".encode()).hexdigest()
            return DatasetLineage(uri=uri, fingerprint=f"sha256:{digest}", etag=_etag(o.etag))
        prefix = key.rstrip("/") + "/" if key else ""
        objects = sorted((o for o in store.list(bucket, prefix) if not o.key.endswith("/")), key=lambda o: o.key)
    except Exception as e:  # lineage must never fail a run
        log.warning("dataset fingerprint unavailable: %s", e)
        return None
    h = hashlib.sha256()
    for o in objects:
        h.update(f"{o.key[len(prefix):]}\0{_etag(o.etag)}\0{o.size}\n".encode())
    return DatasetLineage(uri=uri, fingerprint=f"sha256:{h.hexdigest()}", objects=len(objects))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return f"sha256:{h.hexdigest()}"


def base_model_lineage(store: S3Store | None, model: ModelRef, local: str | None) -> BaseModelLineage:
    """The starting weights' identity. ``local``: the file the trainer loads (None or a YAML: from scratch)."""
    out = BaseModelLineage(uri=model.text)
    path = Path(local) if local else None
    if path is not None and path.is_file() and path.suffix == ".pt":
        out.sha256 = sha256_file(path)
    if isinstance(model, TrainingJobModel):
        out.training_job = model.name  # the operator says whose weights these are
    uri = s3_location(model)
    if uri is None or store is None:
        return out
    bucket, key = parse_s3_uri(uri)
    try:
        found = [o for o in store.list(bucket, key) if o.key == key]
        out.etag = _etag(found[0].etag) if found else None
    except Exception as e:
        log.warning("base weights ETag unavailable: %s", e)
        return out
    if isinstance(model, TrainingJobModel) and model.metrics and out.etag:
        out.run_id = _parent_run(store, model.metrics, out.etag)
    return out


def _parent_run(store: S3Store, metrics_uri: str, etag: str) -> str | None:
    """The runId of the parent's metrics.json (status.artifacts.metrics) when it lists these very weights (same
    ETag as weights/best.pt): a later run of the parent may have published others since."""
    try:
        body = store.get_bytes_or_none(*parse_s3_uri(metrics_uri))
        meta = json.loads(body) if body else None
    except Exception as e:
        log.warning("parent run of %s unavailable: %s", metrics_uri, e)
        return None
    listed = ((meta or {}).get("objects") or {}).get("weights/best.pt") or {}
    return meta.get("runId") if meta and _etag(listed.get("etag")) == etag else None


def software_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("ultralytics", "torch"):
        try:
            out[name] = __import__(name).__version__
        except Exception:
            out[name] = None
    return out


def lineage(dataset: DatasetLineage | None, base: BaseModelLineage | None, trainer_image: str | None) -> Lineage:
    return Lineage(dataset=dataset, base_model=base, trainer_image=trainer_image, **software_versions())
