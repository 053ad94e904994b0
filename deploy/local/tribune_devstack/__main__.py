import sys

from tribune_devstack.cli import main

sys.exit(main())
