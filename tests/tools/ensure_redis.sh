#!/usr/bin/env bash
# Make sure `redis-server` is on PATH for the Redis tests (rate limits, stored responses, the
# reference deployment).  The tests start their own redis-server on a free loopback port; the
# system service the package may start is not used.  macOS: brew install redis.
exec "$(dirname "$0")/apt_install.sh" redis-server redis-server --version
