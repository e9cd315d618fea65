"""`python -m aft ...` is the `aft` command."""

import sys

from aft.cli import main

if __name__ == "__main__":  # the vllm engine spawns processes that re-import __main__
    sys.exit(main())
