#!/usr/bin/env bash
# Make sure `redis-server` is on PATH for the Redis tests of the rate-limit plugin
# (tests/plugins/test_rate_limit.py, tests/live/test_rate_limit_live.py).
#
# Installs Debian/Ubuntu's `redis-server` package with apt-get when it is missing (as root, or
# through password-less sudo).  The tests start their own redis-server on a free loopback port,
# so the system service the package may start is not used.  Exit status 0 when redis-server is
# available afterwards; otherwise 1 with the reason on stderr (the tests then fail when CI is set).
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
    echo "ensure_redis: $(redis-server --version | head -n 1)"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure_redis: redis-server is missing and apt-get is not available;" \
         "install Redis by hand (macOS: brew install redis)" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "ensure_redis: redis-server is missing and this user can neither run apt-get as root" \
         "nor use password-less sudo; install the redis-server package" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
if ! "${as_root[@]}" apt-get install -y --no-install-recommends redis-server >/dev/null; then
    # A clean machine may have no package lists yet.
    "${as_root[@]}" apt-get update -qq || true
    if ! "${as_root[@]}" apt-get install -y --no-install-recommends redis-server; then
        echo "ensure_redis: apt-get could not install redis-server (no mirror reachable?)" >&2
        exit 1
    fi
fi

if ! command -v redis-server >/dev/null 2>&1; then
    echo "ensure_redis: redis-server was installed but is not on PATH" >&2
    exit 1
fi
echo "ensure_redis: installed $(redis-server --version | head -n 1)"
