"""Shared fixtures. Integration and e2e tests use the real local test bed (hack/testbed.sh).

The bed is brought up once per session (or a running one is reused) and left running, so a developer's
next run starts in seconds; `make testbed-down` stops it. Each test gets its own namespace / bucket.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from yolo_dev import testbed


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test without a marker is a unit test: it must not need the bed.
    for item in items:
        if not any(item.get_closest_marker(m) for m in ("unit", "integration", "e2e", "fault")):
            item.add_marker(pytest.mark.unit)
    # Tests that take the shared bed down and up again run after every test that uses it; before them, those that
    # take the TrainingJob CRD from the chart (OLM installs its own) run after every test that shares it.
    items.sort(key=lambda item: (item.get_closest_marker("bed_cycle") is not None,
                                 item.get_closest_marker("owns_crd") is not None))  # fmt: skip


@pytest.fixture(scope="session")
def bed() -> Path:
    testbed.bring_up()
    return testbed.TESTBED


@pytest.fixture(scope="session")
def kubeconfig(bed: Path) -> Path:
    return testbed.KUBECONFIG


KubectlRunner = Callable[..., subprocess.CompletedProcess]


@pytest.fixture(scope="session")
def kubectl(kubeconfig: Path) -> KubectlRunner:
    """kubectl(*args, input=None, check=True, namespace=None) -> CompletedProcess (text)."""
    env = {**os.environ, "PATH": testbed.tool_path(), "KUBECONFIG": str(kubeconfig)}

    def run(
        *args: str,
        input: str | None = None,
        check: bool = True,
        namespace: str | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess:
        cmd = ["kubectl", *(["-n", namespace] if namespace else []), *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="session")
def k8s_api(kubeconfig: Path):
    from kubernetes import config

    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield api_client
    api_client.close()


def _create_namespace(kubectl: KubectlRunner, labels: dict[str, str]) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    kubectl("create", "namespace", name)
    if labels:
        kubectl("label", "namespace", name, *(f"{k}={v}" for k, v in labels.items()))
    try:
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(kubectl: KubectlRunner) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    yield from _create_namespace(kubectl, {})


@pytest.fixture
def restricted_namespace(kubectl: KubectlRunner) -> Iterator[str]:
    """A fresh namespace where the `restricted` Pod Security level is enforced."""
    yield from _create_namespace(kubectl, {"pod-security.kubernetes.io/enforce": "restricted"})


@pytest.fixture(scope="session")
def s3_env(bed: Path) -> testbed.S3Env:
    return testbed.s3_env()


@pytest.fixture(scope="session")
def s3_client(s3_env: testbed.S3Env):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_env.endpoint,
        region_name=s3_env.region,
        aws_access_key_id=s3_env.access_key,
        aws_secret_access_key=s3_env.secret_key,
    )


@pytest.fixture
def s3_bucket(s3_client) -> str:
    """A fresh, empty bucket for one test (left behind: the bed is disposable)."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def bucket(s3_client) -> str:
    """A fresh bucket shared by the tests of one module (for their module-scoped datasets)."""
    name = f"m-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def real_node(kubectl: KubectlRunner) -> str:
    """The bed's real node (hack/node.sh: containerd + kubelet running the project's images); yields its name.

    Pods reach it with REAL_NODE_PLACEMENT (dev/src/yolo_dev/stack.py): a nodeSelector and a toleration of its taint.
    """
    node = testbed.node_setting("NODE_NAME")
    kubectl("wait", "--for=condition=Ready", f"node/{node}", "--timeout=120s")
    return node


@pytest.fixture(scope="module")
def good(bucket, s3_client, tmp_path_factory) -> str:
    """A small valid YOLO dataset in S3 (the trainer tests' starting point); its s3:// prefix."""
    from yolo_trainer.testing import upload_dir, write_yolo_dataset

    tmp = tmp_path_factory.mktemp("good")
    write_yolo_dataset(tmp / "ds", n_train=4, n_val=2)
    upload_dir(s3_client, bucket, "good", tmp / "ds")
    return f"s3://{bucket}/good"


@pytest.fixture
def runner(s3_env, tmp_path):
    """Runs the trainer as a process against the bed's S3 (tests/trainer_fixtures.py)."""
    from tests.trainer_fixtures import TrainerRunner

    return TrainerRunner(s3_env, tmp_path)


# --- figures in the run's output -------------------------------------------------------------------------------
# Tests print what a closing note quotes (HA-FIGURE, UPGRADE-FIGURE, PROMQL, ranks:, the kubectl table while a
# gang trains, ...). pytest hides a passed test's output, so those lines are gathered here and printed once at the
# end: a CI log then holds them without -s.
FIGURE_PREFIXES = ("ranks:", "HA-FIGURE", "UPGRADE-FIGURE", "FAULT-FIGURE", "PROMQL", "HISTORY-", "2 nodes x ",
                   "resumed from epoch", "evicted ", "eviction:", "KUEUE-FIGURE", "PLUGIN-E2E", "IMAGES-FIGURE",
                   "REGISTRY-FIGURE", "OLM-FIGURE", "$ kubectl get")  # fmt: skip
_FIGURES: list[str] = []


def figure_lines(text: str) -> list[str]:
    """The figure lines of a test's output; after a ``$ kubectl get`` line, its table: up to a blank line not
    followed by another kind's header (``kubectl get tj,jobs,pods`` separates the kinds by a blank line)."""
    out, table, blank = [], False, False
    for line in text.splitlines():
        stripped = line.strip()
        if table and not stripped:
            blank = True
            continue
        if table and blank and not stripped.startswith("NAME "):
            table = False
        blank = False
        if table:
            out.append("    " + line)
        elif stripped.startswith(FIGURE_PREFIXES):
            out.append(stripped)
            table = stripped.startswith("$ kubectl get")
    return out


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and report.passed:
        lines = figure_lines(report.capstdout)
        if lines:
            _FIGURES.append(f"{report.nodeid}\n" + "\n".join(f"  {line}" for line in lines))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if _FIGURES:
        terminalreporter.section("figures printed by passed tests")
        for block in _FIGURES:
            terminalreporter.write_line(block)
