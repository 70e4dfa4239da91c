"""Operator commands of stats.

    python -m services.stats rebuild [--check] [...]   rebuild the figures from position 0 (see rebuild.py)
"""

from __future__ import annotations

import sys

from services.stats import rebuild

COMMANDS = {"rebuild": rebuild.main}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(COMMANDS[sys.argv[1]](sys.argv[2:]))
