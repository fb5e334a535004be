"""``python -m metarec``: the ``metarec`` command, as ``python -m metarec.cli`` runs it."""

import sys

from metarec.launch import main

sys.exit(main())
