"""`make testbed-down` leaves nothing behind: no process, mount, network namespace, interface, route, cgroup,
iptables rule, changed sysctl, listener (TCP or UDP: the cluster DNS) or path outside .testbed/. Runs last
(conftest moves `bed_cycle` tests to the end of the session) and brings the bed back up, so a developer's next
run still finds it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from yolo_dev import testbed

pytestmark = [pytest.mark.integration, pytest.mark.bed_cycle]


def sysctls(names: list[str]) -> dict[str, str]:
    out = subprocess.run(["sysctl", "-e", *names], capture_output=True, text=True).stdout
    return dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)


def iptables_rules() -> list[str]:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if not line.startswith(("#", ":"))]


def mounts_under(prefixes: tuple[str, ...]) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p.startswith(prefixes)]


@pytest.mark.timeout(900)
def test_testbed_down_leaves_nothing_behind(bed, kubectl):
    before = Path(testbed.node_setting("BEFORE_DIR"))
    recorded_sysctls = dict(
        line.split(" = ", 1) for line in (before / "sysctl").read_text().splitlines() if " = " in line
    )
    recorded_paths = set((before / "paths").read_text().split())
    recorded_rules = (before / "iptables").read_text().splitlines()
    # The bed is really up: the kubelet changed the kernel tunables it always changes.
    assert sysctls(list(recorded_sysctls)) != recorded_sysctls or not recorded_sysctls
    netns, host_if = testbed.node_setting("NODE_NETNS"), testbed.node_setting("HOST_IF")
    cache_root = str(Path.home() / ".cache" / "yolo-operator" / "containerd-root")
    host_ip = testbed.node_setting("HOST_IP")
    # The bed is really up: its cluster DNS answers on the node link (UDP and TCP :53).
    assert f"{host_ip}:53" in subprocess.run(["ss", "-lunH"], capture_output=True, text=True).stdout

    down = subprocess.run([str(testbed.ROOT / "hack/testbed.sh"), "down"], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    try:
        assert down.returncode == 0, down.stderr
        assert not testbed.TESTBED.exists()
        procs = subprocess.run(["pgrep", "-af", "kubelet|kube-proxy|containerd|weed|socat|etcd|kube-apiserver|coredns"],
                               capture_output=True, text=True).stdout  # fmt: skip
        ours = [p for p in procs.splitlines() if str(testbed.ROOT) in p or "/run/yolo-testbed" in p or cache_root in p]
        assert not ours, ours
        assert not mounts_under((str(testbed.ROOT), "/run/yolo-testbed", cache_root, "/var/lib/kubelet",
                                 "/run/netns/cni-")), "mounts left"  # fmt: skip
        assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert host_if not in links and "yolo-br0" not in links, links
        assert "10.213." not in subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
        assert not list(Path("/sys/fs/cgroup").glob("*/kubepods")), "pod cgroups left"
        assert sysctls(list(recorded_sysctls)) == recorded_sysctls
        assert iptables_rules() == recorded_rules
        for side in ("/var/lib/kubelet", "/var/log/pods", "/var/log/containers", "/var/lib/cni", "/run/containerd"):
            assert Path(side).exists() == (side in recorded_paths), side
        assert not Path("/run/yolo-testbed").exists()
        assert not before.exists(), "a clean teardown forgets the machine's record"
        listeners = subprocess.run(["ss", "-ltunH"], capture_output=True, text=True).stdout
        assert host_ip + ":" not in listeners, listeners
    finally:
        testbed.bring_up()
