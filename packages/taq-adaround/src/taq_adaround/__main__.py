import sys

from taq_adaround.cli import main

sys.exit(main())
