"""``python -m broadcaster``: the command line (broadcaster.interfaces.cli.app)."""

import sys

from broadcaster.interfaces.cli.app import main

sys.exit(main())
