import sys

from taq_bench.cli import main

sys.exit(main())
