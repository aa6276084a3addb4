"""Smoke test run inside an operator image (`hack/images.sh smoke`, tests/integration/test_images.py), the same on
every base: the interpreter the image runs, that the installed app imports as the operator does, and what its CRD
generator prints. Python 3.11 stdlib only plus the installed packages; prints one `key: value` per line."""

import hashlib
import shutil
import sys
import tomllib  # 3.11+: pyproject reading in the Dockerfile needs it too
from importlib.metadata import version
from pathlib import Path

sys.modules.setdefault("kubernetes", None)  # as yolo_operator.__main__ does
import yolo_operator.runtime.wiring  # noqa: E402,F401  (kopf, pydantic and every handler the operator registers)
from yolo_operator.gen import crd  # noqa: E402

entrypoint = shutil.which("yolo-operator")
print("python:", ".".join(map(str, sys.version_info[:3])), sys.implementation.name)
print("executable:", sys.executable)
print("prefix:", sys.prefix)
print("tomllib:", tomllib.__name__)
print("entrypoint:", entrypoint, Path(entrypoint).read_text().splitlines()[0] if entrypoint else None)
for dist in ("yolo-operator", "kopf", "pydantic", "aiohttp"):
    print(f"{dist}:", version(dist))
print("crd-sha256:", hashlib.sha256(crd.render().encode()).hexdigest())
