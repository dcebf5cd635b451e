"""`python -m nbtunnel.access tcp|ssh ...`: the access client without the rest of the CLI."""

import sys

from nbtunnel.access.command import main

sys.exit(main())
