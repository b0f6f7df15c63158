"""`python -m backstage.agent ARTIFACT VERB ...`: the agent run from a checkout instead of agent.pyz."""

import sys

from .cli import main

sys.exit(main())
