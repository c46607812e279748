"""``python -m farm.engine.native build|check``: see :mod:`farm.engine.native`."""

import sys

from farm.engine.native import main

sys.exit(main())
