#!/bin/sh
# p2 'python' task: install PKG==VER ... into the pod's virtualenv.
set -e
VENV="$POD_HOME/venv"
if [ ! -x "$VENV/bin/python" ]; then
    echo "the virtualenv $VENV does not exist yet: is the service running?" >&2
    exit 1
fi
if [ $# -eq 0 ]; then
    echo "usage: install PKG[==VERSION] ..." >&2
    exit 2
fi
"$VENV/bin/python" -m pip install --disable-pip-version-check "$@"
for spec in "$@"; do
    echo "$spec" >> "$POD_HOME/p2-task-installed.txt"
done
