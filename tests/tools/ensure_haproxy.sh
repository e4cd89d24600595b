#!/usr/bin/env bash
# Make sure Debian's `haproxy` is on PATH for the reference deployment's live tests
# (tests/deploy/test_local_stack.py: three replicas behind HAProxy).  The tests start their own
# haproxy on free loopback ports; the system service the package may install is not used.
exec "$(dirname "$0")/apt_install.sh" haproxy haproxy -v
