"""``python -m tap_mixpanel_parallel.testing.fake_server``: serve until SIGTERM/SIGINT."""

import sys

from tap_mixpanel_parallel.testing.fake_server.cli import main

sys.exit(main())
