"""`python -m prefkit`: the same command as `prefkit` (what `accelerate launch -m prefkit` runs)."""

import sys

from prefkit.cli import main

sys.exit(main())
