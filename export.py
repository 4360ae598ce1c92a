#!/usr/bin/env python
"""ONNX export entry point: `python export.py --run RUN_DIR --out FILE.onnx ...`.

Not built yet: export and GPU inference arrive with the export issue (#6), once trained runs
exist. This placeholder says so and fails, so no script mistakes it for a finished export.
"""

import sys

if __name__ == "__main__":
    print("export.py: ONNX export is not implemented yet (open issue #6; it needs trained runs "
          "from #5). What works today: the projection pipeline and its preview, see README.md.",
          file=sys.stderr)
    sys.exit(1)
