import sys

from taq_calib.cli import main

sys.exit(main())
