# syntax=docker/dockerfile:1
# Two images from one file (build context: the repository root; .dockerignore admits only what they need):
#
#   docker build --target operator -t ghcr.io/yolo-operator/yolo-operator:0.1.0 .
#   docker build --target trainer  -t ghcr.io/yolo-operator/yolo-trainer:0.1.0 .
#
# Both run as the numeric non-root user 1001 in group 0, with every writable directory group-0 writable, so
# they run unchanged under OpenShift's restricted-v2 SCC (an arbitrary UID in group 0) and Pod Security
# "restricted". Versions come from requirements.lock (the same pins the tests run with); dependencies are
# installed before the source is copied, so a source change rebuilds only the last layers. No model
# weights or data sets are baked in: the trainer downloads them at run time (or reads them from S3).
#
# The trainer needs no CUDA base image: the PyPI torch wheels pinned in requirements.lock bring the CUDA
# runtime, cuDNN, cuBLAS and NCCL as nvidia-* wheels (CUDA 13), so a CUDA base would ship a second copy.
# The node needs only the NVIDIA driver (>= 580 for CUDA 13) and the device plugin / GPU Operator.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- shared base -------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HOME=/home/yolo \
    USER=yolo \
    LOGNAME=yolo
# HOME for any UID (getpass.getuser() reads USER/LOGNAME: an OpenShift UID has no passwd entry).
RUN mkdir -p /home/yolo/.config /home/yolo/.cache \
 && chgrp -R 0 /home/yolo \
 && chmod -R g=u /home/yolo \
 && python -m pip install "pip==25.3" "setuptools==84.2.1"
WORKDIR /opt/yolo-operator

# --- the project wheel (source only; both images install it without dependencies) --------------------------
FROM base AS wheel
COPY pyproject.toml ./
COPY operator/src operator/src
COPY trainer/src trainer/src
RUN python -m pip wheel --no-deps --no-build-isolation --wheel-dir /wheels .

# --- operator: kopf and its own small API client (no `kubernetes` package, no torch) -----------------------
FROM base AS operator
COPY pyproject.toml requirements.lock ./
# The project's own dependencies plus the `operator` extra, at the versions of requirements.lock.
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['operator']))" > /tmp/requirements.txt \
 && python -m pip install --constraint requirements.lock --requirement /tmp/requirements.txt \
 && rm /tmp/requirements.txt
COPY --from=wheel /wheels /wheels
RUN python -m pip install --no-deps /wheels/*.whl \
 && rm -rf /wheels
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
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['trainer']))" > /tmp/requirements.txt \
 && python -m pip install --constraint requirements.lock --requirement /tmp/requirements.txt \
 && python -m pip uninstall --yes opencv-python \
 && python -m pip install --no-deps "opencv-python-headless==5.0.0.93" \
 && YOLO_CONFIG_DIR=/tmp/check MPLCONFIGDIR=/tmp/check python -c "import cv2, torch, ultralytics; print('cv2', cv2.__version__, 'torch', torch.__version__, 'ultralytics', ultralytics.__version__)" \
 && rm -rf /tmp/requirements.txt /tmp/check
COPY --from=wheel /wheels /wheels
RUN python -m pip install --no-deps /wheels/*.whl \
 && rm -rf /wheels
LABEL org.opencontainers.image.title="yolo-trainer" \
      org.opencontainers.image.description="Ultralytics YOLO trainer run by yolo-operator TrainingJobs" \
      org.opencontainers.image.source="https://github.com/yolo-operator/yolo-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
USER 1001:0
WORKDIR /tmp
ENTRYPOINT ["yolo-trainer"]
