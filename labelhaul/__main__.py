import sys

from labelhaul.cli import main

sys.exit(main())
