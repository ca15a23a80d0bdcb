"""``python -m distblob.commands ingest|verify|gc ...``, until the main command line has them."""

from __future__ import annotations

import sys

from distblob.commands import main

sys.exit(main())
