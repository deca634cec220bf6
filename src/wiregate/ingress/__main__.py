import sys

from wiregate.ingress.runner import main

sys.exit(main())
