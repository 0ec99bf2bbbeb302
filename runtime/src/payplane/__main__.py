"""``python -m payplane …`` is the ``payplane`` command."""

import sys

from payplane.cli import main

sys.exit(main())
