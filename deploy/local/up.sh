#!/usr/bin/env sh
# Bring the local reference deployment up: Redis, three ddx-llm replicas, HAProxy on
# http://127.0.0.1:4260 (deploy/README.md).  Uses $PYTHON, else the project's .venv, else python3.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x "$here/../../.venv/bin/python" ]; then python="$here/../../.venv/bin/python"; else python=python3; fi
fi
exec "$python" "$here/stack.py" up "$@"
