"""Run the machat client from a checkout: ``python cmd/client.py -client Mina -room dev``."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from machat.cmd.client import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
