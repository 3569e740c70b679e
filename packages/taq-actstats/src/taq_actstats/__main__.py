import sys

from taq_actstats.cli import main

sys.exit(main())
