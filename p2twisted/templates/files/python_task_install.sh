#!/bin/sh
# p2 'python' task: install PKG==VER ... into the pod's virtualenv.
set -e
if [ $# -eq 0 ]; then
    echo "usage: install PKG[==VERSION] ..." >&2
    exit 2
fi
. "$LAUNCHABLE_ROOT/lib/venv-ready.sh"
"$VENV/bin/python" -m pip install --disable-pip-version-check "$@"
for spec in "$@"; do
    echo "$spec" >> "$POD_HOME/p2-task-installed.txt"
done
