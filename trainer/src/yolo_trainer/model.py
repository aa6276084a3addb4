"""Resolving the base model (``TrainerConfig.model``, a typed ``ModelRef``) to something ``ultralytics.YOLO`` can
load without surprises.

One kind each (``yolo_contract.model_source``): a model YAML (``yolov8n.yaml``: from scratch, always offline), a
URI (``s3://.../x.pt``, ``https://.../x.pt``), a parent TrainingJob's best weights (an s3:// URI), a local path
baked into the image, or a hub name (``yolov8n.pt``) which Ultralytics downloads from GitHub: only when online.
The kind is the config's, never guessed here from the string.

Failures are ``ModelUnavailable`` (exit 13, not retried) with the alternatives named,
except network hiccups while downloading, which are retriable.
"""

from __future__ import annotations

import logging
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from yolo_contract.exitcodes import ModelUnavailable, TrainerError
from yolo_contract.model_source import FileModel, HubModel, ModelRef, UriModel, YamlModel, s3_location

from .s3 import S3NotFound, S3Store, parse_s3_uri

log = logging.getLogger(__name__)

ALTERNATIVES = (
    "use an s3:// URI of a .pt checkpoint, an https:// URI of a .pt file, "
    "or a model YAML such as yolov8n.yaml to train from scratch"
)
MAX_MODEL_BYTES = 4 << 30


def _check_builtin_yaml(spec: str) -> str:
    from ultralytics.nn.tasks import yaml_model_load

    try:
        yaml_model_load(spec)  # resolves scaled names: yolov8n.yaml -> yolov8.yaml with scale n
        return spec
    except Exception as e:
        raise ModelUnavailable(
            f"model YAML {spec!r} not found (neither a file nor an Ultralytics model config)"
        ) from e


def _download_https(url: str, dest: Path, timeout: float = 60) -> None:
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
            n = 0
            while chunk := resp.read(1 << 20):
                n += len(chunk)
                if n > MAX_MODEL_BYTES:
                    raise ModelUnavailable(f"model {url} is larger than {MAX_MODEL_BYTES} bytes")
                out.write(chunk)
        tmp.replace(dest)
    except urllib.error.HTTPError as e:
        raise ModelUnavailable(f"model {url} could not be downloaded: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        # The network may come back: retriable (exit 20), unlike a 404.
        raise TrainerError(f"model {url} could not be downloaded: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def resolve_model(
    model: ModelRef, store: S3Store | None, dest_dir: Path, offline: bool, hub_mirror: str | None = None
) -> str:
    """Returns a local .pt path or a YAML name/path for ``YOLO(...)``. A hub name is looked up in
    ``hub_mirror`` (an s3:// prefix, for disconnected clusters) before the internet is tried."""
    spec = model.text
    dest_dir.mkdir(parents=True, exist_ok=True)
    if isinstance(model, YamlModel):
        if Path(spec).is_file():
            return str(Path(spec).resolve())
        return _check_builtin_yaml(spec)
    if s3_location(model) is not None:  # an s3:// URI, or a parent TrainingJob's weights
        bucket, key = parse_s3_uri(spec)
        if not key.endswith((".pt", ".yaml", ".yml")):
            raise ModelUnavailable(f"model {spec} must be a .pt checkpoint (or a model .yaml)")
        dest = dest_dir / Path(key).name
        if store is None:
            raise ModelUnavailable(f"model {spec}: no S3 client")
        try:
            store.download(bucket, key, dest, max_size=MAX_MODEL_BYTES)
        except S3NotFound as e:
            raise ModelUnavailable(f"model {spec} does not exist") from e
        return str(dest)
    if isinstance(model, UriModel):  # https:// (or http://)
        if offline:
            raise ModelUnavailable(
                f"model {spec} needs the internet but the trainer is offline; {ALTERNATIVES}"
            )
        dest = dest_dir / (Path(spec.split("?", 1)[0]).name or "model.pt")
        _download_https(spec, dest)
        return str(dest)
    if isinstance(model, FileModel):
        if Path(spec).is_file():
            return str(Path(spec).resolve())
        raise ModelUnavailable(f"model file {spec} does not exist in the trainer image; {ALTERNATIVES}")
    assert isinstance(model, HubModel), model
    if Path(spec).is_file():  # pre-seeded in the working directory / image
        return str(Path(spec).resolve())
    if not spec.endswith(".pt"):
        raise ModelUnavailable(f"model {spec!r} is not a .pt hub name, URI or YAML; {ALTERNATIVES}")
    if hub_mirror:
        bucket, prefix = parse_s3_uri(hub_mirror)
        key = f"{prefix.rstrip('/')}/{spec}" if prefix.strip("/") else spec
        if store is None:
            raise ModelUnavailable(f"model {spec!r}: hub mirror {hub_mirror} but no S3 client")
        try:
            store.download(bucket, key, dest_dir / spec, max_size=MAX_MODEL_BYTES)
            log.info("model %s from the hub mirror s3://%s/%s", spec, bucket, key)
            return str(dest_dir / spec)
        except S3NotFound:
            log.warning("model %s is not in the hub mirror s3://%s/%s", spec, bucket, key)
    if offline:
        raise ModelUnavailable(
            f"model {spec!r} is a hub name that must be downloaded from the internet, "
            "but the trainer is offline; "
            f"{ALTERNATIVES}"
        )
    try:
        from ultralytics.utils.downloads import attempt_download_asset

        path = Path(attempt_download_asset(spec))
    except Exception as e:
        raise ModelUnavailable(f"model {spec!r} could not be downloaded from the Ultralytics hub: {e}") from e
    if not path.is_file():
        raise ModelUnavailable(
            f"model {spec!r} could not be downloaded from the Ultralytics hub; {ALTERNATIVES}"
        )
    dest = dest_dir / path.name
    shutil.copyfile(path, dest)
    return str(dest)
