"""The bed's cluster DNS build (hack/coredns, hack/build-coredns.sh) against what uses it: the version pin in
hack/versions.env, and the Corefile hack/testbed.sh writes, whose every directive must be a plugin the minimal
build has (a missing one only shows as CoreDNS refusing to start when a bed comes up)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def corefile_directives() -> set[str]:
    """The plugins the Corefile in hack/testbed.sh names: the first word of each line directly in a server block."""
    script = (ROOT / "hack/testbed.sh").read_text()
    body = re.search(r"<<COREFILE\n(.*?)\nCOREFILE\n", script, re.DOTALL)
    assert body, "hack/testbed.sh writes no Corefile (<<COREFILE ... COREFILE)"
    return {m.group(1) for m in re.finditer(r"^ {4}([a-z_0-9]+)\b", body.group(1), re.MULTILINE)}


def test_the_corefile_uses_only_plugins_the_build_has():
    main = (ROOT / "hack/coredns/main.go").read_text()
    built = set(re.findall(r'_ "github.com/coredns/coredns/plugin/([a-z_0-9]+)"', main))
    used = corefile_directives()
    assert {"bind", "kubernetes", "template"} <= used, used  # the parse found the Corefile's plugins
    assert used <= built, f"add to hack/coredns/main.go's imports: {sorted(used - built)}"


def test_go_module_pin_matches_versions_env():
    """hack/build-coredns.sh refuses a hack/coredns/go.mod that drifted from hack/versions.env."""
    pins = dict(line.split("=", 1) for line in (ROOT / "hack/versions.env").read_text().splitlines()
                if "=" in line and not line.startswith("#"))  # fmt: skip
    gomod = (ROOT / "hack/coredns/go.mod").read_text()
    assert f"\tgithub.com/coredns/coredns {pins['COREDNS_VERSION']}\n" in gomod
