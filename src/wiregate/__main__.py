import sys

from wiregate.cli.main import main

sys.exit(main())
