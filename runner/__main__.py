"""`python -m runner` is the same as the `retrain` command."""

import signal
import sys

# Before the command's imports: a Ctrl-C or SIGTERM while they load ends the command (exit 130) even when
# SIGINT was inherited ignored; runner/interrupts.py takes over once `main` runs.
for _signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signum, signal.default_int_handler)
try:
    from runner.commands import main
except KeyboardInterrupt:
    sys.exit(130)

sys.exit(main())
