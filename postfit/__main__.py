"""Run the ``postfit`` command as ``python -m postfit``."""

import sys

from .cli import main

sys.exit(main())
