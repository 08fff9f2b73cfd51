# Sourced by the p2 'python' tasks: wait until the service has made its
# virtualenv (bin/launch writes the stamp once the requirements are in).
VENV="$POD_HOME/venv"
STAMP="$VENV/.p2-requirements.sha256"
waited=0
while [ ! -s "$STAMP" ]; do
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
