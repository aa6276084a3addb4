# Three images from one file (build context: the repository root; .dockerignore admits only what they need).
# `make images` (hack/images.sh) builds both with no registry: a Debian base made by debootstrap, and the
# Python packages from a wheelhouse it builds from requirements.lock:
#
#   make images    ->  ghcr.io/yolo-operator/yolo-operator:<appVersion>, ghcr.io/yolo-operator/yolo-trainer:<appVersion>
#   make console-plugin-image  ->  ghcr.io/yolo-operator/yolo-console-plugin:<appVersion> (the third target)
#
# By hand, with any base that has a Python 3.11 interpreter, after `hack/images.sh wheelhouse` has filled
# .wheelhouse/ (BuildKit: RUN --mount):
#
#   docker build --target operator --build-arg BASE_IMAGE=python:3.11.14-slim-bookworm -t <registry>/yolo-operator:0.1.0 .
#   docker build --target trainer  --build-arg BASE_IMAGE=python:3.11.14-slim-bookworm -t <registry>/yolo-trainer:0.1.0 .
#
# PYTHON names the interpreter the virtualenv is made from (default python3.11), never `python3`: on a base like
# Red Hat's UBI 9 (registry.access.redhat.com/ubi9/python-311) `python3` is the system's 3.9 and 3.11 is
# `python3.11`. The first build step stops with a message when PYTHON is missing or older than 3.11.
# `hack/images.sh second-base` builds the operator on such a base made here (`python3` is not 3.11) and
# tests/integration/test_images.py runs the same smoke test in both images.
#
# Nothing is fetched during the build (pip runs with --no-index against the mounted wheelhouse, which never
# becomes a layer), so it works unchanged on a disconnected network and bakes in no proxy or CA of the build
# machine. Both images run as the numeric non-root user 1001 in group 0, with every writable directory
# group-0 writable, so they run unchanged under OpenShift's restricted-v2 SCC (an arbitrary UID in group 0)
# and Pod Security "restricted". Dependencies are installed before the source is copied, so a source change
# rebuilds only the last layers. No model weights or data sets are baked in.
#
# The trainer needs no CUDA base image: the PyPI torch wheels pinned in requirements.lock bring the CUDA
# runtime, cuDNN, cuBLAS and NCCL as nvidia-* wheels (CUDA 13), so a CUDA base would ship a second copy.
# The node needs only the NVIDIA driver (>= 580 for CUDA 13) and the device plugin / GPU Operator.

ARG BASE_IMAGE=python:3.11.14-slim-bookworm
ARG PYTHON=python3.11

# --- shared base: a virtualenv on the base's Python 3.11 (Debian's, python:*-slim's or UBI's alike) ---------
FROM ${BASE_IMAGE} AS base
ARG PYTHON
# Bases such as UBI's python-311 default to a non-root user; the build steps need root. Each target ends USER 1001.
# hadolint ignore=DL3002
USER 0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheelhouse \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/home/yolo \
    USER=yolo \
    LOGNAME=yolo
# Fail early, naming the fix, rather than at `import tomllib` or pip's requires-python (3.11) further down.
RUN command -v "$PYTHON" >/dev/null \
 || { echo "BASE_IMAGE has no $PYTHON on PATH: pass --build-arg PYTHON=<its Python 3.11+ interpreter>" >&2; exit 1; } \
 && "$PYTHON" -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else f"{sys.executable} is Python {v.major}.{v.minor}; the images need 3.11 or newer: pass --build-arg PYTHON=<a Python 3.11+ interpreter of the base image>")'
# Every later step runs `python` from this virtualenv, i.e. PYTHON.
# HOME for any UID (getpass.getuser() reads USER/LOGNAME: an OpenShift UID has no passwd entry).
RUN "$PYTHON" -m venv /opt/venv \
 && mkdir -p /home/yolo/.config /home/yolo/.cache \
 && chgrp -R 0 /home/yolo \
 && chmod -R g=u /home/yolo
WORKDIR /opt/yolo-operator

# --- the project wheel (source only; both images install it without dependencies) --------------------------
FROM base AS wheel
COPY pyproject.toml ./
COPY contract/src contract/src
COPY operator/src operator/src
COPY trainer/src trainer/src
# setuptools (pyproject's build backend) comes from the wheelhouse too.
RUN --mount=type=bind,source=.wheelhouse,target=/wheelhouse \
    python -m pip wheel --no-deps --wheel-dir /wheels .

# --- operator: kopf and its own small API client (no `kubernetes` package, no torch) -----------------------
FROM base AS operator
COPY pyproject.toml requirements.lock ./
# The project's own dependencies plus the `operator` extra, at the versions of requirements.lock.
RUN --mount=type=bind,source=.wheelhouse,target=/wheelhouse \
    python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['operator']))" > /tmp/requirements.txt \
 && python -m pip install --constraint requirements.lock --requirement /tmp/requirements.txt \
 && rm /tmp/requirements.txt
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    python -m pip install --no-deps /wheels/*.whl
LABEL org.opencontainers.image.title="yolo-operator" \
      org.opencontainers.image.description="Kubernetes operator for YOLO TrainingJobs (kopf)" \
      org.opencontainers.image.source="https://github.com/yolo-operator/yolo-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
USER 1001:0
# 8080: Prometheus /metrics, 8081: /healthz (YOLO_OPERATOR_METRICS_PORT / YOLO_OPERATOR_HEALTH_PORT)
EXPOSE 8080 8081
ENTRYPOINT ["yolo-operator"]

# --- trainer: Ultralytics + torch (CUDA from the torch wheels), headless OpenCV ------------------------------
FROM base AS trainer
# What the NVIDIA container toolkit needs to inject the driver (nvidia/cuda images set the same).
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    YOLO_CONFIG_DIR=/home/yolo/.config/Ultralytics \
    MPLCONFIGDIR=/home/yolo/.config/matplotlib \
    TORCH_HOME=/home/yolo/.cache/torch
RUN mkdir -p "$YOLO_CONFIG_DIR" "$MPLCONFIGDIR" "$TORCH_HOME" \
 && chgrp -R 0 /home/yolo \
 && chmod -R g=u /home/yolo
COPY pyproject.toml requirements.lock ./
# Ultralytics depends on opencv-python, which needs libGL/X11; a server wants opencv-python-headless (same
# cv2 module, same version). Both own cv2/, so the GUI build is removed before the headless one goes in,
# all in one layer so that neither the GUI wheel nor its removal costs image size. The import check writes
# its settings to /tmp/check, not into the image's HOME.
RUN --mount=type=bind,source=.wheelhouse,target=/wheelhouse \
    python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['trainer']))" > /tmp/requirements.txt \
 && python -m pip install --constraint requirements.lock --requirement /tmp/requirements.txt \
 && python -m pip uninstall --yes opencv-python \
 && python -m pip install --no-deps "opencv-python-headless==5.0.0.93" \
 && YOLO_CONFIG_DIR=/tmp/check MPLCONFIGDIR=/tmp/check python -c "import cv2, torch, ultralytics; print('cv2', cv2.__version__, 'torch', torch.__version__, 'ultralytics', ultralytics.__version__)" \
 && rm -rf /tmp/requirements.txt /tmp/check
RUN --mount=type=bind,from=wheel,source=/wheels,target=/wheels \
    python -m pip install --no-deps /wheels/*.whl
LABEL org.opencontainers.image.title="yolo-trainer" \
      org.opencontainers.image.description="Ultralytics YOLO trainer run by yolo-operator TrainingJobs" \
      org.opencontainers.image.source="https://github.com/yolo-operator/yolo-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
USER 1001:0
WORKDIR /tmp
ENTRYPOINT ["yolo-trainer"]

# --- console-plugin: the OpenShift console plugin's built bundle served over TLS (port 9443) -----------------
# console-plugin/dist is `make console-plugin`'s webpack output (hack/images.sh console-plugin builds it first);
# serve.py is a standard-library HTTPS file server, so this image is the base and two COPYs. The certificate
# comes from the Secret OpenShift's service CA fills (the chart mounts it at /var/serving-cert).
FROM base AS console-plugin
COPY console-plugin/serve.py /opt/console-plugin/serve.py
COPY console-plugin/dist/ /opt/console-plugin/dist/
LABEL org.opencontainers.image.title="yolo-console-plugin" \
      org.opencontainers.image.description="OpenShift console plugin of yolo-operator: TrainingJob training curves" \
      org.opencontainers.image.source="https://github.com/yolo-operator/yolo-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
USER 1001:0
EXPOSE 9443
ENTRYPOINT ["python", "/opt/console-plugin/serve.py"]
