"""``python -m autofocus`` is the same as the ``autofocus`` command."""

import sys

from autofocus.cli import main

sys.exit(main())
