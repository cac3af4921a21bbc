"""``python -m sao`` is the ``sao`` command."""

import sys

from sao.cli import main

sys.exit(main())
