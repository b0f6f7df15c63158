#!/bin/sh
# backstage production alpha: installs this artifact on a host.
echo "install.sh: this artifact was built before apply existed; rebuild it with a newer backstage" >&2
exit 1
