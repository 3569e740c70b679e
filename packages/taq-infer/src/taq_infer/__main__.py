import sys

from taq_infer.cli import main

sys.exit(main())
