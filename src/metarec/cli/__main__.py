"""``python -m metarec.cli``: the ``metarec`` command without its console script."""

import sys

from metarec.launch import main

sys.exit(main())
