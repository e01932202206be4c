"""Run the chat server from a checkout: ``python cmd/chatserver.py -a localhost:8989``."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from machat.cmd.chatserver import main  # noqa: E402

sys.exit(main())
