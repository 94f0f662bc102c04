"""`python -m m2kt` is the `m2kt` command."""

import sys

from m2kt.cli import main

sys.exit(main())
