"""The worker's entry point, kept where units and scripts run it: ``python -m service.worker``."""

import sys

from service.tasks.worker_process import main

if __name__ == "__main__":
    sys.exit(main())
