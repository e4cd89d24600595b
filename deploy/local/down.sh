#!/usr/bin/env sh
# Take the local reference deployment down: the replicas drain, then HAProxy and Redis stop
# (deploy/README.md).  Uses $PYTHON, else the project's .venv, else python3.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x "$here/../../.venv/bin/python" ]; then python="$here/../../.venv/bin/python"; else python=python3; fi
fi
exec "$python" "$here/stack.py" down "$@"
