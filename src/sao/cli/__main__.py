"""``python -m sao.cli`` (as ``torchrun -m sao.cli``) is the ``sao`` command."""

import sys

from sao.cli import main

sys.exit(main())
