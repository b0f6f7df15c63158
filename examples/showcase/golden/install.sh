#!/bin/sh
# backstage production showcase: makes this artifact live on a host, or rolls it back.
# Needs POSIX sh and a Python 3 (standard library only): a Stage's virtualenv has one.
#   ./install.sh apply [--dry-run]   ./install.sh rollback [--to HASH]
#   ./install.sh generations         ./install.sh gc --keep N
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd -P) || exit 1
for python in python3 python3; do
    if command -v "$python" >/dev/null 2>&1; then
        exec "$python" -I "$here/agent.pyz" "$here" "$@"
    fi
done
echo "install.sh: no Python 3 found: a Stage virtualenv's bin/python3 or python3 on PATH" >&2
exit 1
