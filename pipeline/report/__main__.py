import sys

from pipeline.report.command import main

sys.exit(main())
