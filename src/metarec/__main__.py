"""``python -m metarec``: the ``metarec`` command, as ``python -m metarec.cli`` runs it."""

import sys

from metarec.cli import main

sys.exit(main())
