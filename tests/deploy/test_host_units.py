"""The host service definitions: the systemd unit passes ``systemd-analyze verify`` without a
single diagnostic, the launchd plist is a well-formed XML property list of launchd's keys and
types (``plutil`` is macOS-only: Python's plistlib parses it), and both give the drain its time."""

from __future__ import annotations

import plistlib
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from deploy_support import DEPLOY, require_tool
from support import ROOT

UNIT = DEPLOY / "systemd" / "ddx-llm.service"
PLIST = DEPLOY / "launchd" / "org.ddx-llm.serve.plist"
HYPERCORN = tomllib.loads((ROOT / "conf" / "hypercorn.toml").read_text())
CORE = tomllib.loads((ROOT / "conf" / "ddx-llm.toml").read_text())["core"]
LONGEST_STOP = CORE["drain_seconds"] + 5 + HYPERCORN["graceful_timeout"]  # README, "Serving"


def unit_values() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_systemd_analyze_verify_has_nothing_to_say(tmp_path):
    analyze = require_tool("systemd-analyze", "ensure_systemd.sh")
    # verify also checks that ExecStart's program exists: point it at this environment's.
    installed = unit_values()["ExecStart"][0].split()[0]
    here = str(Path(sys.executable).with_name("ddx-llm"))
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(installed, here))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and not (done.stdout + done.stderr).strip(), done.stderr
    # and it would say so: a misspelled key is reported
    unit.write_text(unit.read_text().replace("KillMode=", "KilMode="))
    noisy = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert "Unknown key" in noisy.stderr


def test_the_unit_serves_with_ddx_llm_serve_and_waits_for_the_drain():
    values = unit_values()
    command = shlex.split(values["ExecStart"][0])
    assert Path(command[0]).name == "ddx-llm" and command[1] == "serve"
    assert values["KillSignal"] == ["SIGTERM"] and values["KillMode"] == ["mixed"]
    assert int(values["TimeoutStopSec"][0]) > LONGEST_STOP
    assert values["RestartPreventExitStatus"] == ["2"]  # a bad conf does not mend itself
    assert values["User"] == ["ddx-llm"]  # never root


LAUNCHD_KEYS = {
    "Label": str, "ProgramArguments": list, "WorkingDirectory": str,
    "EnvironmentVariables": dict, "RunAtLoad": bool, "KeepAlive": (bool, dict),
    "ThrottleInterval": int, "ExitTimeOut": int, "ProcessType": str,
    "SoftResourceLimits": dict, "StandardOutPath": str, "StandardErrorPath": str,
}  # fmt: skip
"""The keys this plist uses and the types launchd.plist(5) gives them."""


def test_the_plist_is_a_launchd_job():
    raw = PLIST.read_bytes()
    assert raw.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    assert b"<!DOCTYPE plist PUBLIC" in raw
    job = plistlib.loads(raw, fmt=plistlib.FMT_XML)
    for key, value in job.items():
        assert key in LAUNCHD_KEYS, f"{key} is not a launchd key this test knows"
        assert isinstance(value, LAUNCHD_KEYS[key]), key
    assert job["Label"] == PLIST.name.removesuffix(".plist")
    assert all(isinstance(arg, str) for arg in job["ProgramArguments"])
    assert Path(job["ProgramArguments"][0]).name == "ddx-llm"
    assert job["ProgramArguments"][1] == "serve"
    assert all(isinstance(v, str) for v in job["EnvironmentVariables"].values())
    assert job["ProcessType"] in {"Background", "Standard", "Adaptive", "Interactive"}
    assert job["KeepAlive"] == {"SuccessfulExit": False}  # restart after a failure only
    assert job["ExitTimeOut"] > LONGEST_STOP
    assert not any("KEY" in name for name in job["EnvironmentVariables"])  # no secret here


@pytest.mark.parametrize("path", [UNIT, PLIST])
def test_the_conf_they_name_exists_in_the_project(path):
    # both point at a hypercorn.toml and a conf folder laid out like the project's conf/
    assert "hypercorn.toml" in path.read_text()
    assert (ROOT / "conf" / "hypercorn.toml").is_file()
