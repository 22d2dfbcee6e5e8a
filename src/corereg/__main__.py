import sys

from corereg.cli import main

sys.exit(main())
