"""``python -m vgpu_nb`` = the ``vgpu-nb`` command."""

import sys

from .cli import main

sys.exit(main())
