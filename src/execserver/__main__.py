"""`python -m execserver` runs the command line."""

import sys

from execserver.cli import main

sys.exit(main())
