#!/usr/bin/env bash
# apt_install.sh COMMAND PACKAGE [VERSION-ARGS...]: make sure COMMAND is on PATH, installing the
# Debian/Ubuntu PACKAGE with apt-get when it is missing (as root, or through password-less sudo).
# Shared by the ensure_*.sh scripts that tox runs before the tests (commands_pre).  Exit status 0
# when COMMAND is available afterwards; otherwise 1 with the reason on stderr (the tests that need
# it then fail when CI is set, and skip on a developer's machine).
set -euo pipefail

command_name=$1
package=$2
shift 2
version_args=("$@")
[ ${#version_args[@]} -gt 0 ] || version_args=(--version)
label="ensure $command_name"

show_version() { "$command_name" "${version_args[@]}" 2>&1 | head -n 1; }

if command -v "$command_name" >/dev/null 2>&1; then
    echo "$label: $(show_version)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "$label: $command_name is missing and apt-get is not available; install $package by hand" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "$label: $command_name is missing and this user can neither run apt-get as root" \
         "nor use password-less sudo; install the $package package" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! "${as_root[@]}" apt-get install -y --no-install-recommends "$package" >/dev/null; then
    # A clean machine may have no package lists yet.
    "${as_root[@]}" apt-get update -qq || true
    if ! "${as_root[@]}" apt-get install -y --no-install-recommends "$package"; then
        echo "$label: apt-get could not install $package (no mirror reachable?)" >&2
        exit 1
    fi
fi

if ! command -v "$command_name" >/dev/null 2>&1; then
    echo "$label: $package was installed but $command_name is not on PATH" >&2
    exit 1
fi
echo "$label: installed $(show_version)"
