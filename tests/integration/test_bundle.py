"""The OLM bundle against OLM itself: regenerated with the pinned helm it equals the committed bundle/, OLM's
own bundle loader and validators (github.com/operator-framework/api, built into hack/olm-validate) accept it
and catch a broken copy, and the CSV passes a server-side dry run against OLM's ClusterServiceVersion CRD
in the test bed's API server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from yolo_dev import testbed
from yolo_operator.gen import bundle

pytestmark = pytest.mark.integration

ROOT = testbed.ROOT
CSV_CRD = "clusterserviceversions.operators.coreos.com"


def run(cmd: list[str], timeout: float = 180, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def helm_bin() -> Path:
    out = run([str(ROOT / "hack" / "build-binaries.sh")], timeout=1800)
    helm = Path(out.stdout.strip().splitlines()[-1]) / "helm"
    assert helm.is_file(), helm
    return helm


@pytest.fixture(scope="module")
def olm_validate() -> Path:
    """hack/olm-validate, built from the pinned operator-framework/api (minutes cold, then cached)."""
    if shutil.which("go") is None:
        pytest.skip("no Go toolchain: hack/build-olm-validate.sh cannot build OLM's validators")
    out = run([str(ROOT / "hack" / "build-olm-validate.sh")], timeout=1800)
    return Path(out.stdout.strip().splitlines()[-1])


def test_committed_bundle_matches_generator(helm_bin):
    """Drift: rerun `python -m yolo_operator.gen.bundle --write` after changing the chart, the CRD or examples/."""
    assert bundle.main(["--check", "--helm", str(helm_bin)]) == 0


def copy_inputs(dst: Path) -> None:
    for rel in ("charts", "examples", "docs/images"):
        shutil.copytree(ROOT / rel, dst / rel)


def test_check_mode_detects_drift(helm_bin, tmp_path):
    copy_inputs(tmp_path)
    args = ["--root", str(tmp_path), "--helm", str(helm_bin)]
    assert bundle.main(["--write", *args]) == 0
    assert bundle.main(["--check", *args]) == 0
    (tmp_path / bundle.CSV_PATH).write_text("stale")
    assert bundle.main(["--check", *args]) == 1
    assert bundle.main(["--write", *args]) == 0
    (tmp_path / bundle.MANIFESTS / "leftover.yaml").write_text("kind: ConfigMap\n")
    assert bundle.main(["--check", *args]) == 1
    assert bundle.main(["--write", *args]) == 0
    assert not (tmp_path / bundle.MANIFESTS / "leftover.yaml").exists()


DIGEST = "sha256:" + "cd" * 32


def test_a_bundle_of_your_images_is_pinned_by_digest(helm_bin, tmp_path):
    """`make bundle IMG=... TRAINER_IMG=...`: the chart renders the images, so the CSV's Deployment, the trainer
    image the operator hands every TrainingJob and relatedImages name them; pinned, the bundle claims disconnected
    support. The catalog of that bundle names the bundle image and the same related images."""
    op, tr = f"10.213.255.1:7500/team/yolo-operator@{DIGEST}", f"quay.io/team/yolo-trainer@{DIGEST}"
    plugin = f"quay.io/team/yolo-console-plugin@{DIGEST}"
    out, cat = tmp_path / "bundle", tmp_path / "catalog"
    assert bundle.main(["--write", "--helm", str(helm_bin), "--operator-image", op, "--trainer-image", tr,
                        "--console-plugin-image", plugin, "--out", str(out), "--catalog", str(cat),
                        "--bundle-image", f"r/b@{DIGEST}"]) == 0  # fmt: skip
    csv = yaml.safe_load((out / bundle.CSV_PATH.relative_to("bundle")).read_text())
    (container,) = csv["spec"]["install"]["spec"]["deployments"][0]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (container["image"], env[bundle.TRAINER_IMAGE_ENV]) == (op, tr)
    assert csv["spec"]["relatedImages"] == [{"name": "operator", "image": op}, {"name": "trainer", "image": tr},
                                            {"name": "console-plugin", "image": plugin}]  # fmt: skip
    assert csv["metadata"]["annotations"][bundle.DISCONNECTED] == "true"
    assert (out / "bundle.Dockerfile").is_file() and (out / "metadata" / "annotations.yaml").is_file()
    fbc = list(yaml.safe_load_all((cat / "configs" / "yolo-operator" / "catalog.yaml").read_text()))
    assert [d["schema"] for d in fbc] == ["olm.package", "olm.channel", "olm.bundle"]
    assert [r["image"] for r in fbc[2]["relatedImages"]] == [f"r/b@{DIGEST}", op, tr, plugin]
    # Tags (here the console plugin's, the chart's default): the same bundle, without the disconnected claim; and
    # never over the committed bundle/.
    assert bundle.main(["--write", "--helm", str(helm_bin), "--operator-image", op, "--trainer-image", tr,
                        "--out", str(tmp_path / "tagged")]) == 0  # fmt: skip
    tagged = yaml.safe_load((tmp_path / "tagged" / bundle.CSV_PATH.relative_to("bundle")).read_text())
    assert tagged["metadata"]["annotations"][bundle.DISCONNECTED] == "false"
    with pytest.raises(SystemExit):
        bundle.main(["--write", "--helm", str(helm_bin), "--operator-image", "r/op:1"])


# The first test to use olm_validate may build it: 11-12 minutes cold on 2 busy cores (`make test` builds it
# before pytest starts, `make bundle-validate` too).
@pytest.mark.timeout(2400)
def test_olm_validators_accept_the_bundle(olm_validate):
    kube = testbed.read_env_file(ROOT / "hack" / "versions.env")["KUBE_VERSION"]  # v1.36.3 -> 1.36
    minor = ".".join(kube.removeprefix("v").split(".")[:2])
    proc = run([str(olm_validate), "-k8s-version", minor, str(ROOT / "bundle")], check=False)
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "olm-validate: 0 error(s)" in proc.stdout
    for suite in ("default (CSV, CRD, bundle)", "standard capabilities", "standard categories", "good practices"):
        assert f"== {suite}\n   ok" in proc.stdout, proc.stdout
    # The one warning (from the OperatorHub and deprecated-API validators) is a false positive: RBAC names no
    # version, and the validator takes any rule on events.k8s.io for events.k8s.io/v1beta1 (removed in 1.25),
    # while the operator's is events.k8s.io/v1. Any other warning fails here.
    rules = yaml.safe_load((ROOT / bundle.CSV_PATH).read_text())["spec"]["install"]["spec"]["permissions"][0]["rules"]
    (i,) = [n for n, r in enumerate(rules) if r["apiGroups"] == ["events.k8s.io"]]
    warnings = [line for line in proc.stdout.splitlines() if line.strip().startswith("WARN")]
    assert len(warnings) == 2, proc.stdout
    for w in warnings:
        assert "Migrate the API(s) for events" in w and f"Permissions[0].Rules[{i}]" in w, w


@pytest.mark.timeout(2400)
def test_olm_validators_catch_a_broken_bundle(olm_validate, tmp_path):
    """The validator is not a rubber stamp: a CSV owning a CRD the bundle lacks, and without a version, fails."""
    broken = tmp_path / "bundle"
    shutil.copytree(ROOT / "bundle", broken)
    (broken / bundle.CRD_PATH.relative_to("bundle")).unlink()
    csv_path = broken / bundle.CSV_PATH.relative_to("bundle")
    csv = yaml.safe_load(csv_path.read_text())
    del csv["spec"]["version"]
    csv_path.write_text(yaml.safe_dump(csv))
    proc = run([str(olm_validate), str(broken)], check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'owned CRD "yolo-operator.io/v1alpha1, Kind=TrainingJob" not found in bundle' in proc.stdout, proc.stdout
    assert "csv.Spec.Version must be set" in proc.stdout, proc.stdout


@pytest.fixture(scope="module")
def csv_crd(kubectl):
    """OLM's ClusterServiceVersion CRD (the pinned module's crds/) in the bed's API server, removed afterwards
    unless it was there before."""
    crds = Path(run([str(ROOT / "hack" / "build-olm-validate.sh"), "--crds"], timeout=600).stdout.strip())
    existed = kubectl("get", "crd", CSV_CRD, check=False).returncode == 0
    crd_file = crds / "operators.coreos.com_clusterserviceversions.yaml"
    try:
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_file))
        wait = ("wait", "--for=condition=Established", f"crd/{CSV_CRD}", "--timeout=10s")
        testbed.wait_until(lambda: kubectl(*wait, check=False).returncode == 0, timeout=60, what=f"{CSV_CRD} ready")
        yield CSV_CRD
    finally:
        if not existed:
            kubectl("delete", "crd", CSV_CRD, "--wait=false", check=False)


def test_csv_dry_run_server_against_olm_crd(csv_crd, kubectl, namespace):
    out = kubectl("apply", "--dry-run=server", "-o", "yaml", "-f", str(ROOT / bundle.CSV_PATH), namespace=namespace)
    applied = yaml.safe_load(out.stdout)
    committed = yaml.safe_load((ROOT / bundle.CSV_PATH).read_text())
    # Nothing the CSV says was pruned as unknown by OLM's schema.
    assert applied["spec"]["install"] == committed["spec"]["install"]
    assert applied["spec"]["customresourcedefinitions"] == committed["spec"]["customresourcedefinitions"]
    assert applied["spec"]["installModes"] == committed["spec"]["installModes"]
    # and the schema is live: a CSV without install strategy is refused.
    broken = {**committed, "spec": {k: v for k, v in committed["spec"].items() if k != "install"}}
    proc = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(broken), namespace=namespace,
                   check=False)  # fmt: skip
    assert proc.returncode != 0 and "install" in proc.stderr, proc.stderr


def test_bundle_extras_dry_run_server(kubectl, namespace):
    """The Services of the bundle (metrics, console plugin) apply as they are (the console objects need
    OpenShift's API)."""
    services = sorted((ROOT / bundle.MANIFESTS).glob("*.service.yaml"))
    names = [s.name for s in services]
    assert names == ["yolo-operator-console-plugin.service.yaml", "yolo-operator-metrics.service.yaml"], names
    for svc in services:
        kubectl("apply", "--dry-run=server", "-f", str(svc), namespace=namespace)
