"""Operator commands of stats.

    python -m services.stats rebuild [--check] [...]   rebuild the figures from position 0 (see rebuild.py)
"""

from __future__ import annotations

import sys
import warnings

# nameko (imported with the projection kernel) imports eventlet, which announces its deprecation:
# noise on an operator's terminal.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from services.stats import rebuild  # noqa: E402

COMMANDS = {"rebuild": rebuild.main}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
