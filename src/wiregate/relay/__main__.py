"""`python -m wiregate.relay --config relay.toml` (see wiregate.relay.runner)."""

import sys

from wiregate.relay.runner import main

sys.exit(main())
