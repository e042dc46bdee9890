import sys

from lsqueeze.cli import main

sys.exit(main())
