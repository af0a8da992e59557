"""``python -m negmine.cli``: the same as the ``negmine`` command (useful under ``torchrun``)."""

import sys

from negmine.cli import main

sys.exit(main())
