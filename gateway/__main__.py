"""``python -m gateway`` runs the ``mcp-orch`` command line."""

import sys

from .cli import main

sys.exit(main())
