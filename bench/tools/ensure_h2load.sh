#!/usr/bin/env bash
# Make sure the benchmark's load generators are on PATH for bench/run.py: `h2load` (Debian's
# nghttp2-client; h2c) and `wrk` (HTTP/1.1: h2load 1.52 miscounts Hypercorn's HTTP/1.1 answers,
# bench/loadgen.py says why).
#
# Installs the packages with apt-get when missing (as root, or through password-less sudo).
# Exit status 0 when both are available afterwards; otherwise 1 with the reason on stderr.
set -euo pipefail

if command -v h2load >/dev/null 2>&1 && command -v wrk >/dev/null 2>&1; then
    echo "ensure_h2load: $(h2load --version | head -n 1), $(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_h2load: h2load or wrk is missing and apt-get is not available;" \
         "install them by hand (macOS: brew install nghttp2 wrk)" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "ensure_h2load: h2load or wrk is missing and this user can neither run apt-get as" \
         "root nor use password-less sudo; install the nghttp2-client and wrk packages" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
packages=(nghttp2-client wrk)
if ! "${as_root[@]}" apt-get install -y --no-install-recommends "${packages[@]}" >/dev/null; then
    # A clean machine may have no package lists yet.
    "${as_root[@]}" apt-get update -qq || true
    if ! "${as_root[@]}" apt-get install -y --no-install-recommends "${packages[@]}"; then
        echo "ensure_h2load: apt-get could not install ${packages[*]} (no mirror reachable?)" >&2
        exit 1
    fi
fi

for tool in h2load wrk; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "ensure_h2load: the packages were installed but $tool is not on PATH" >&2
        exit 1
    fi
done
echo "ensure_h2load: installed $(h2load --version | head -n 1) and wrk"
