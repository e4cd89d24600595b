#!/usr/bin/env bash
# Make sure the benchmark's load generators are on PATH for bench/run.py: `h2load` (Debian's
# nghttp2-client; h2c) and `wrk` (HTTP/1.1: h2load 1.52 miscounts Hypercorn's HTTP/1.1 answers,
# bench/loadgen.py says why).  macOS: brew install nghttp2 wrk.
set -euo pipefail
install="$(dirname "$0")/../../tests/tools/apt_install.sh"
"$install" h2load nghttp2-client --version
"$install" wrk wrk -v
