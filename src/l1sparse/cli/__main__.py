"""``python -m l1sparse.cli``: the same as the ``l1sparse`` command."""

import sys

from .app import main

sys.exit(main())
