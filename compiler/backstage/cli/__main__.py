"""`python -m backstage.cli`. Ctrl-C while it starts was seen to before this runs: importing the package
(first, here as for the console script) installs the SIGINT handler (backstage._started_as_command)."""

import sys

from . import main

sys.exit(main())
