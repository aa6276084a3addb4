"""Final outputs: model exports and publishing a run's files under ``<job_prefix>/``.

Commit protocol (readers never see a mix of two runs)::

    1. delete <job_prefix>/metrics.json      (un-commit whatever an earlier run of this job published)
    2. upload weights/best.pt, weights/last.pt, results.csv, args.yaml, plots/*, exports/*
    3. put    <job_prefix>/metrics.json      LAST: the commit marker
    4. delete objects of earlier runs that step 2 did not overwrite (best effort)

``metrics.json`` names the run (``runId``) and lists every object of the run with its size and ETag. A reader
that wants a consistent set reads metrics.json first and then fetches the listed objects (optionally with
``If-Match: <etag>``); no metrics.json means nothing is committed (a run is publishing, or failed).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from yolo_contract.exitcodes import ConfigInvalid, TrainerError
from yolo_contract.progress import Artifacts

from .s3 import S3Store, join_key, parse_s3_uri, s3_uri

log = logging.getLogger(__name__)

METRICS_JSON = "metrics.json"
PLOT_SUFFIXES = (".png", ".jpg")
# Python packages an export format needs, checked before training so a missing one fails in seconds.
EXPORT_REQUIREMENTS: dict[str, tuple[str, ...]] = {
    "torchscript": (),
    "onnx": ("onnx",),
    "openvino": ("openvino",),
    "engine": ("tensorrt",),
    "coreml": ("coremltools",),
    "saved_model": ("tensorflow",),
    "pb": ("tensorflow",),
    "tflite": ("tensorflow",),
    "edgetpu": ("tensorflow",),
    "tfjs": ("tensorflowjs",),
    "paddle": ("paddle",),
    "mnn": ("MNN",),
    "ncnn": ("ncnn",),
    "imx": ("imx500_converter",),
    "rknn": ("rknn",),
    "executorch": ("executorch",),
}
CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".csv": "text/csv",
    ".yaml": "application/yaml",
    ".json": "application/json",
}


def check_export_formats(formats: list[str], has_module=None) -> None:
    """ConfigInvalid for an unknown format or one whose Python package is not installed in this image."""
    has_module = has_module or (lambda m: importlib.util.find_spec(m) is not None)
    for fmt in formats:
        if fmt not in EXPORT_REQUIREMENTS:
            raise ConfigInvalid(
                f"unknown export format {fmt!r}; supported: {', '.join(sorted(EXPORT_REQUIREMENTS))}"
            )
        missing = [m for m in EXPORT_REQUIREMENTS[fmt] if not has_module(m)]
        if missing:
            raise ConfigInvalid(
                f"export format {fmt!r} needs the Python package(s) {', '.join(missing)}, "
                "which the trainer image "
                "does not have; remove it from exportFormats or use an image that includes it"
            )


def export_models(best_pt: Path, formats: list[str], imgsz: int) -> tuple[list[Path], dict[str, str]]:
    """Exports best.pt; returns (files, {format: error}). A failed export does not lose the weights."""
    from ultralytics import YOLO

    files: list[Path] = []
    errors: dict[str, str] = {}
    for fmt in formats:
        try:
            kwargs: dict[str, Any] = {"format": fmt, "imgsz": imgsz, "device": "cpu"}
            if fmt == "onnx" and importlib.util.find_spec("onnxslim") is None:
                kwargs["simplify"] = (
                    False  # onnxslim is optional; never let Ultralytics try to pip-install it
                )
            out = YOLO(str(best_pt)).export(**kwargs)
            if not out or not Path(out).exists():
                raise TrainerError(f"export to {fmt} produced no file")
            files.append(Path(out))
        except Exception as e:
            log.error("export to %s failed: %s", fmt, e)
            errors[fmt] = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
    return files, errors


def collect_files(save_dir: Path, exports: list[Path]) -> list[tuple[Path, str]]:
    """(local file, key relative to the job prefix) for everything a run publishes."""
    out: list[tuple[Path, str]] = []
    for name in ("weights/best.pt", "weights/last.pt", "results.csv", "args.yaml"):
        if (save_dir / name).is_file():
            out.append((save_dir / name, name))
    for p in sorted(save_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in PLOT_SUFFIXES:
            out.append((p, f"plots/{p.name}"))
    for p in exports:
        if p.is_file():
            out.append((p, f"exports/{p.name}"))
        elif p.is_dir():  # directory formats (openvino, saved_model...)
            out.extend(
                (q, f"exports/{p.name}/{q.relative_to(p).as_posix()}")
                for q in sorted(p.rglob("*"))
                if q.is_file()
            )
    return out


def _clean_number(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def publish(
    store: S3Store,
    job_prefix: str,
    files: list[tuple[Path, str]],
    metrics: dict[str, Any],
    run_id: str,
    extra: dict[str, Any] | None = None,
    concurrency: int = 4,
) -> Artifacts:
    bucket, prefix = parse_s3_uri(job_prefix)
    marker = join_key(prefix, METRICS_JSON)
    store.delete(bucket, marker)  # 1. un-commit

    def put(item: tuple[Path, str]) -> tuple[str, dict[str, Any]]:
        path, rel = item
        etag = store.upload_file(path, bucket, join_key(prefix, rel), CONTENT_TYPES.get(path.suffix.lower()))
        return rel, {"size": path.stat().st_size, "etag": etag}

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="s3-up") as pool:
        objects = dict(pool.map(put, files))  # 2. upload (first error propagates)

    body = {
        "runId": run_id,
        "completedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "metrics": {k: _clean_number(v) for k, v in metrics.items()},
        **(extra or {}),
        "objects": objects,
    }
    store.put_bytes(bucket, marker, json.dumps(body, indent=1).encode())  # 3. commit
    _delete_stale(store, bucket, prefix, set(objects) | {METRICS_JSON})  # 4. tidy

    def uri(rel: str) -> str | None:
        return s3_uri(bucket, join_key(prefix, rel)) if rel in objects else None

    exports = [s3_uri(bucket, join_key(prefix, r)) for r in objects if r.startswith("exports/")]
    return Artifacts(
        best_weights=uri("weights/best.pt"),
        last_weights=uri("weights/last.pt"),
        results=uri("results.csv"),
        metrics=s3_uri(bucket, marker),
        plots=s3_uri(bucket, join_key(prefix, "plots")) + "/"
        if any(r.startswith("plots/") for r in objects)
        else None,
        exports=exports or None,
    )


def _delete_stale(store: S3Store, bucket: str, prefix: str, keep: set[str]) -> None:
    try:
        for obj in store.list(bucket, prefix + "/"):
            rel = obj.key[len(prefix) + 1 :]
            top = rel.split("/", 1)[0]
            if rel not in keep and top in {"weights", "plots", "exports", "results.csv", "args.yaml"}:
                store.delete(bucket, obj.key)
    except Exception as e:  # stale objects are not named by metrics.json; leaving them is harmless
        log.warning("could not delete stale outputs: %s", e)
