"""deploy/Dockerfile, checked statically (there is no Docker engine here): multi-stage,
non-root, the entry points the manifests start, SWarp in the processor image, protobuf
code generated inside the build the way `make protos` does."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.manifests import (
    REPO,
    SERVICES,
    Variant,
    build,
    container_env,
    find,
    pod_spec,
    service_container,
)

DOCKERFILE = REPO / "deploy" / "Dockerfile"
IGNORE = REPO / "deploy" / "Dockerfile.dockerignore"


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, op: str) -> list[str]:
        return [arg for o, arg in self.instructions if o == op]


def parse(text: str) -> dict[str, Stage]:
    """Stages by name: (instruction, argument) pairs, continuations joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") or not raw.strip():
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for line in lines:
        op, _, arg = line.strip().partition(" ")
        op, arg = op.upper(), " ".join(arg.split())
        if op == "FROM":
            m = re.fullmatch(r"(\S+)(?: AS (\S+))?", arg, re.IGNORECASE)
            assert m and m.group(2), f"every stage is named: FROM {arg}"
            current = stages[m.group(2)] = Stage(m.group(2), m.group(1))
        elif current is not None:
            current.instructions.append((op, arg))
    return stages


STAGES = parse(DOCKERFILE.read_text())


def chain(name: str) -> list[Stage]:
    """The stage and the stages it is built FROM, base first."""
    out: list[Stage] = []
    while name in STAGES:
        out.insert(0, STAGES[name])
        name = STAGES[name].base
    return out


def effective(name: str, op: str) -> list[str]:
    return [arg for stage in chain(name) for arg in stage.all(op)]


def test_is_multi_stage_with_a_stage_per_service() -> None:
    assert {"build", "runtime", *SERVICES} <= set(STAGES)
    for service in SERVICES:
        assert STAGES["runtime"] in chain(service)
    # Compilers and the protobuf generator stay in the build stage.
    runtime_copies = " ".join(effective("runtime", "COPY"))
    assert "--from=build /opt/venv" in runtime_copies and "/opt/protoc" not in runtime_copies


@pytest.mark.parametrize("service", SERVICES)
def test_service_stage_runs_its_entry_point_as_the_manifests_do(service: str) -> None:
    (cmd,) = effective(service, "CMD")[-1:]
    objs = build(Variant("base", ()))
    assert (
        json.loads(cmd)
        == service_container(objs, service)["command"]
        == ["python", "-m", f"services.{service}"]
    )


@pytest.mark.parametrize("service", SERVICES)
def test_service_stage_runs_as_the_non_root_user_of_the_pods(service: str) -> None:
    users = effective(service, "USER")
    assert users, f"{service}: no USER, the image would run as root"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root uid (runAsNonRoot can check it)"
    assert gid.isdigit() and int(gid) != 0
    pod = pod_spec(find(build(Variant("base", ())), "Deployment", service))["securityContext"]
    assert (int(uid), int(gid)) == (pod["runAsUser"], pod["runAsGroup"])
    # The user exists in the image with that uid.
    useradd = " ".join(r for r in effective(service, "RUN") if "useradd" in r)
    assert f"--uid {uid}" in useradd and f"--gid {gid}" in useradd


def test_processor_stage_installs_swarp_then_drops_root() -> None:
    stage = STAGES["processor"]
    ops = stage.instructions
    installs = [
        i for i, (op, arg) in enumerate(ops) if op == "RUN" and re.search(r"apt-get install .*\bswarp\b", arg)
    ]
    assert installs, "the processor stage installs Debian's swarp"
    assert "SWarp -v" in ops[installs[0]][1], "the build fails when the SWarp binary is missing"
    later_users = [arg for op, arg in ops[installs[0] :] if op == "USER"]
    assert later_users and not later_users[-1].startswith(("0", "root"))
    objs = build(Variant("base", ()))
    assert container_env(objs, service_container(objs, "processor")).literal["SWARP_BIN"] == "SWarp"
    for other in set(SERVICES) - {"processor"}:
        assert not any("swarp" in r for r in effective(other, "RUN")), f"{other} does not need SWarp"


def _protoc_flags(command: str) -> set[str]:
    return {
        w
        for w in shlex.split(command.replace("\\", " "))
        if w.startswith(("-I", "--python_out", "--grpc_python_out"))
    }


def test_protobuf_code_is_generated_inside_like_make_protos() -> None:
    runs = [r for r in STAGES["build"].all("RUN") if "grpc_tools.protoc" in r]
    assert runs, "the build stage generates bgimages/ from protos/"
    makefile = (REPO / "Makefile").read_text()
    m = re.search(r"grpc_tools\.protoc (.*?)\$\(PROTO_SRC\)", makefile.replace("\\\n", " "), re.DOTALL)
    assert m, "Makefile's protos target"
    assert _protoc_flags(m.group(1)) <= _protoc_flags(runs[0])
    assert "find protos -name '*.proto'" in runs[0]
    assert any(a.startswith("protos/") for a in STAGES["build"].all("COPY"))
    assert any("--from=build /src/bgimages/" in a for a in STAGES["runtime"].all("COPY"))
    # The generator's pin comes from requirements-build.txt, so the image generates what `make protos` does.
    pins = [
        ln
        for ln in (REPO / "requirements-build.txt").read_text().splitlines()
        if re.match(r"^grpcio-tools==", ln)
    ]
    assert len(pins) == 1


def test_read_only_root_filesystem_is_prepared_for() -> None:
    runtime = STAGES["runtime"]
    env = " ".join(runtime.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "HOME=/tmp" in env
    ops = [op for op, _ in runtime.instructions]
    compile_at = next(
        i for i, (op, arg) in enumerate(runtime.instructions) if op == "RUN" and "compileall" in arg
    )
    assert compile_at < ops.index("USER"), "bytecode is compiled while the image is still writable"


def _ignored(path: str) -> bool:
    """Whether BuildKit leaves `path` out of the context (last matching pattern wins)."""
    ignored = False
    for line in IGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").rstrip("/")
        if Path(path).match(pattern) or path == pattern or path.startswith(pattern + "/"):
            ignored = not negate
    return ignored


def test_copied_files_exist_and_are_in_the_context() -> None:
    for stage in STAGES.values():
        for arg in stage.all("COPY"):
            if arg.startswith("--from"):
                continue
            *sources, _dest = arg.split()
            for src in sources:
                assert (REPO / src).exists(), f"COPY {src}: not in the repository"
                assert not _ignored(src.rstrip("/")), f"COPY {src}: excluded by {IGNORE.name}"
    assert _ignored(".venv") and _ignored("tests") and _ignored(".git")


def test_python_matches_the_project() -> None:
    version = re.search(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)", DOCKERFILE.read_text(), re.MULTILINE)
    requires = re.search(r'requires-python = ">=(\d+\.\d+)"', (REPO / "pyproject.toml").read_text())
    assert version and requires and version.group(1) == requires.group(1)


def test_gateway_ships_the_pages_npm_packages_where_the_manifests_look() -> None:
    objs = build(Variant("base", ()))
    env = container_env(objs, service_container(objs, "gateway")).literal
    copies = STAGES["gateway"].all("COPY")
    for setting in ("ALADIN_LITE_DIR", "TUS_JS_DIR"):
        path = env[setting]
        assert any(c.startswith("--from=assets") and c.split()[-1].rstrip("/") == path for c in copies), (
            setting
        )
    assert "npm ci" in " ".join(STAGES["assets"].all("RUN"))
