"""Fine-tune brandguard's backbone on reference photos: the same as ``brandguard train`` (see its --help).

Example:
    python scripts/finetune.py REFS -o runs/ft --val VAL/labels.csv --calibration CALIB/labels.csv
"""

from __future__ import annotations

import sys

from brandguard.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
