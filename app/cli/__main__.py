"""``python -m app.cli``: the ``tunelab`` command."""

import sys

from app.cli import main

sys.exit(main())
