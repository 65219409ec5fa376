"""``python -m pipeline.cli``: the same program as the ``evpipe`` script."""

import sys

from pipeline.cli.main import main

sys.exit(main())
