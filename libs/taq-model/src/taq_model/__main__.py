import sys

from taq_model.cli import main

sys.exit(main())
