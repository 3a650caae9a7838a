#!/usr/bin/env python
"""Score every listing photo in a folder: a thin wrapper of ``brandguard score``.

Example:
    python scripts/score_folder.py listings/ --index idx/ -o results.csv --report report.html --resume
"""

from __future__ import annotations

import sys

from brandguard.cli import main

if __name__ == "__main__":
    sys.exit(main(["score", *sys.argv[1:]]))
