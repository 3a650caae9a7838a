"""Screenshots of an evidence report for the README: ``report-table.png`` and ``report-card.png``.

Usage (after ``brandguard demo --size small --out /tmp/demo``)::

    python docs/report_screenshots.py /tmp/demo/report.html docs/

Drives the system Chromium (Debian's ``chromium``) with Playwright; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--card", type=int, default=0, help="which card of the first page (0 = highest score)")
    args = ap.parse_args()
    exe = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if exe is None:
        raise SystemExit("no Chromium found: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    args.out_dir.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        page.goto(args.report.resolve().as_uri())
        page.wait_for_selector("section.card")
        page.select_option("#f-size", "10")
        page.evaluate("() => document.querySelectorAll('#cards img').forEach(i => i.loading = 'eager')")
        page.wait_for_function("() => [...document.querySelectorAll('#cards img')].every(i => i.complete)")
        top = page.locator("#table-title").bounding_box()
        pager = page.locator("#pager").bounding_box()
        assert top is not None and pager is not None
        page.screenshot(path=str(args.out_dir / "report-table.png"), full_page=True,
                        clip={"x": 0, "y": top["y"] - 8, "width": 1200,
                              "height": pager["y"] + pager["height"] - top["y"] + 16})
        page.locator("section.card").nth(args.card).screenshot(path=str(args.out_dir / "report-card.png"))
        browser.close()
    for name in ("report-table.png", "report-card.png"):  # a 256-colour palette keeps them small
        with Image.open(args.out_dir / name) as im:
            small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
        small.save(args.out_dir / name, optimize=True)


if __name__ == "__main__":
    main()
