"""`python -m nbtunnel` runs the CLI."""

import sys

from nbtunnel.cli import main

sys.exit(main())
