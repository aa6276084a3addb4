"""The Dockerfile on a second base shaped like Red Hat's ubi9/python-311, built here from Debian packages
(hack/images.sh build_ubi_shaped_base, one layer on the default base): its `python3` is PyPy 3.9 (UBI 9's is
CPython 3.9), Python 3.11 is `python3.11`, there is no `python`, and its default user is 1001. The operator
target builds on it only because the Dockerfile makes its virtualenv from the interpreter named by the PYTHON
build-arg; the same smoke test (hack/image-smoke.py) then runs in the image on the default Debian base and in
this one. The trainer target starts from the same `base` stage (the same interpreter check and virtualenv
lines), so the operator proves the selection for both. Build times are printed (IMAGES-FIGURE), never asserted."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time

import pytest
from yolo_dev import testbed

pytestmark = pytest.mark.integration

IMAGES_SH = str(testbed.ROOT / "hack/images.sh")
UBI_SHAPED_BASE = "localhost/yolo-operator/ubi-shaped:bookworm"

if shutil.which("dockerd") is None and os.geteuid() != 0:
    pytest.skip("hack/images.sh needs Debian's docker.io (or root to install it)", allow_module_level=True)


def images(*args: str, check: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([IMAGES_SH, *args], capture_output=True, text=True, check=check, timeout=timeout,
                          cwd=testbed.ROOT)  # fmt: skip


def smoke(image: str) -> dict[str, str]:
    proc = images("smoke", image, check=False, timeout=300)
    assert proc.returncode == 0, f"smoke test in {image} failed:\n{proc.stdout}\n{proc.stderr}"
    print(f"--- smoke test in {image}\n{proc.stdout}", end="")
    return dict(line.split(": ", 1) for line in proc.stdout.splitlines())


@pytest.fixture(scope="module", autouse=True)
def one_dockerd():
    """Each hack/images.sh call starts and stops dockerd unless another call holds it: `docker events`, run
    through the script for the whole module, holds it (one start instead of one per call)."""
    proc = subprocess.Popen([IMAGES_SH, "docker", "events"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            cwd=testbed.ROOT, start_new_session=True)  # fmt: skip
    yield
    os.killpg(proc.pid, signal.SIGTERM)  # the script's EXIT trap stops dockerd when no other call uses it
    proc.wait(timeout=60)


@pytest.fixture(scope="module")
def operator_images() -> dict[str, str]:
    """Both operator images, each rebuilt only when its inputs changed (`make images` built the default one)."""
    out = {}
    for which, command in (("default", "operator"), ("ubi-shaped", "second-base")):
        start = time.monotonic()
        proc = images(command, check=False)
        assert proc.returncode == 0, f"hack/images.sh {command} failed:\n{proc.stderr[-6000:]}"
        out[which] = proc.stdout.split()[-1]
        print(f"IMAGES-FIGURE hack/images.sh {command}: {time.monotonic() - start:.0f} s -> {out[which]}")
    return out


def test_second_base_is_shaped_like_ubi(operator_images):
    script = "id -u; python3 --version; python3.11 --version; command -v python || echo no-python"
    proc = images("docker", "run", "--rm", "--network=none", UBI_SHAPED_BASE, "sh", "-c", script, timeout=300)
    uid, py3, *rest = proc.stdout.split("\n", 2)
    print(proc.stdout)
    assert uid == "1001", "UBI's images default to a non-root user; the Dockerfile's build steps switch to root"
    assert py3.startswith("Python 3.9") and not py3.startswith("Python 3.11"), f"python3 must not be 3.11: {py3}"
    assert "Python 3.11." in rest[0] and "no-python" in rest[0], rest


def test_the_operator_image_runs_the_same_on_both_bases(operator_images):
    default, ubi = smoke(operator_images["default"]), smoke(operator_images["ubi-shaped"])
    assert default == ubi, "the two images differ"
    assert default["python"].startswith("3.11.") and default["python"].endswith(" cpython")
    assert default["executable"] == "/opt/venv/bin/python" and default["tomllib"] == "tomllib"
    assert default["entrypoint"] == "/opt/venv/bin/yolo-operator #!/opt/venv/bin/python"
    # The installed CRD generator prints exactly the committed CRD: the app works, and from these sources.
    committed = (testbed.ROOT / "manifests/crd/trainingjobs.yaml").read_bytes()
    assert default["crd-sha256"] == hashlib.sha256(committed).hexdigest()


@pytest.mark.parametrize(
    ("python", "message"),
    [
        ("python3", "is Python 3.9; the images need 3.11 or newer: pass --build-arg PYTHON="),
        ("python3.12", "BASE_IMAGE has no python3.12 on PATH: pass --build-arg PYTHON="),
    ],
)
def test_a_wrong_interpreter_fails_the_first_step_naming_the_fix(operator_images, python, message):
    """On the UBI-shaped base `python3` is 3.9: the build stops at its first RUN, before any venv or pip."""
    proc = images("docker", "build", "--network=none", "--progress=plain", "--target", "base",
                  "--build-arg", f"BASE_IMAGE={UBI_SHAPED_BASE}", "--build-arg", f"PYTHON={python}", ".",
                  check=False, timeout=600)  # fmt: skip
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr[-3000:]
    assert "-m venv /opt/venv" not in proc.stderr, "the interpreter check runs before the virtualenv step"
