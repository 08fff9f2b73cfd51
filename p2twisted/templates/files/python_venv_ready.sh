# Sourced by the p2 'python' tasks: wait until the service has made its
# virtualenv with the current requirements (bin/launch writes their SHA-256
# to the stamp once they are in).
VENV="$POD_HOME/venv"
STAMP="$VENV/.p2-requirements.sha256"
WANT=$(sha256sum "$LAUNCHABLE_ROOT/requirements.txt" | cut -d' ' -f1)
waited=0
while [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; do
    if [ "$waited" -eq 0 ]; then
        echo "waiting for the service to prepare its virtualenv $VENV" >&2
    fi
    waited=$((waited + 1))
    if [ "$waited" -gt 600 ]; then
        echo "the virtualenv $VENV is still not ready after 120s: is the service running? see 'p2 logs'" >&2
        exit 1
    fi
    sleep 0.2
done
