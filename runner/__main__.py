"""`python -m runner` is the same as the `retrain` command."""

import sys

from runner.commands import main

sys.exit(main())
