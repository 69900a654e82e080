import sys

from aind_assets_runtime.worker import main

sys.exit(main())
