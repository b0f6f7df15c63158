#!/bin/sh
# backstage production showcase: makes this artifact live on a host, or rolls it back.
# Needs POSIX sh and a Python 3 (standard library only): a Stage's virtualenv has one.
#   ./install.sh apply [--dry-run]   ./install.sh rollback [--to HASH]
#   ./install.sh generations         ./install.sh gc --keep N
here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd -P) || exit 1
# Runs as root: only an interpreter no other user can change. The file links lead to must be owned by
# root (or the user running this) and writable by no one else, and so must every directory above it
# (or be sticky, as /tmp). That file is what runs, so a link changed after the check changes nothing.
me=$(id -u)
owned() {
    [ -n "$(find "$1" -maxdepth 0 \( -user 0 -o -user "$me" \) \( ! -perm /022 $2 \) -print 2>/dev/null)" ]
}
trusted() {
    owned "$1" || return 1
    at=$1
    while [ "$at" != / ]; do
        at=$(dirname -- "$at")
        owned "$at" "-o -perm -1000" || return 1
    done
}
for python in python3 python3; do
    found=$(command -v "$python" 2>/dev/null) || continue
    real=$(readlink -f -- "$found") || continue
    if trusted "$real"; then
        exec "$real" -I "$here/agent.pyz" "$here" "$@"
    fi
    echo "install.sh: not running $found ($real): it or a directory above it is another user's, or writable by others" >&2
done
echo "install.sh: no Python 3 found that only root can change: a Stage virtualenv's bin/python3 or python3 on PATH" >&2
exit 1
