"""``python -m fedge.cli``: the ``fedge`` command."""

import sys

from fedge.cli.entry import main

sys.exit(main())
