#!/usr/bin/env bash
# Make sure `systemd-analyze` is on PATH: tests/deploy/test_host_units.py checks the systemd unit
# of deploy/systemd/ with `systemd-analyze verify` (no running systemd needed).
exec "$(dirname "$0")/apt_install.sh" systemd-analyze systemd --version
