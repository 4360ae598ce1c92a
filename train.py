#!/usr/bin/env python
"""Training entry point: `python train.py --config configs/X.yaml [key=value ...]`.

Not built yet: the training and evaluation app arrives with the training issue (#5), after the
datasets (#3) and models (#4). This placeholder says so and fails, so no script mistakes it for a
finished run.
"""

import sys

if __name__ == "__main__":
    print("train.py: training is not implemented yet (datasets, models and the training loop are "
          "open issues #3, #4, #5). What works today: the projection pipeline and its preview, "
          "see README.md.", file=sys.stderr)
    sys.exit(1)
