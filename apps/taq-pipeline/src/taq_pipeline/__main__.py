import sys

from taq_pipeline.cli import main

sys.exit(main())
