import sys

from sonieval.cli import main

sys.exit(main())
