"""`python -m bgimages_client ...`: the command line."""

import sys

from bgimages_client.cli import main

sys.exit(main())
