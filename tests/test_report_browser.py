"""The evidence report in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

The table sorts and filters, the cards of the rows shown are loaded page by page and every card image loads,
nothing is requested from the network, and a screenshot is saved. Skips, saying why, only where no
Chromium or no Playwright is installed (``.ci/run`` installs both where apt is available).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from brandguard.detector import Match, Prediction

_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _chromium() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Playwright is not installed: pip install -e '.[test]'")
    for name in _BROWSERS:
        exe = shutil.which(name)
        if exe:
            return exe
    pytest.skip("no Chromium on this machine: apt-get install chromium (.ci/run does where apt is available)")


def _predictions(index: Any, photos: list[Path]) -> list[Prediction]:
    m = index.products[0]
    ref = m.refs[m.bank_refs[0]].path
    rng = np.random.default_rng(7)
    out = []
    for k, src in enumerate(photos):
        if k >= 12:
            out.append(Prediction(str(src), "unknown" if k < 14 else "error", 0.0, similarity=0.6,
                                  error="" if k < 14 else "truncated JPEG"))
            continue
        flagged = k < 8
        score = 0.999 - k / 1000 if flagged else 0.4 + k / 100
        heat = np.zeros((96, 128), np.float32)
        y, x = rng.integers(20, 60), rng.integers(20, 90)
        heat[y:y + 20, x:x + 30] = 40.0 if flagged else 1.0
        quad = np.array([[20, 12], [108, 12], [108, 84], [20, 84]], np.float64)
        verdict = "counterfeit" if score >= 0.99 else "suspicious" if flagged else "authentic"
        out.append(Prediction(str(src), verdict, score, 2.0 + 10 * score, m.brand, m.product, 0.9, ref,
                              (Match(m.brand, m.product, ref, 0.9),), inliers=80,
                              channels=(8.0 * score, 1.0, float("nan"), float("nan")), heatmap=heat, quad=quad,
                              instances=1, notes=("demo note",) if k == 0 else (),
                              text=({"expected": "ACME", "read": "ACNE", "confidence": 0.9, "distance": 0.25,
                                     "counted": 0.25},) if k == 1 else ()))
    return out


@pytest.mark.slow
def test_report_in_a_real_browser(small_index, small_dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = _chromium()
    from playwright.sync_api import sync_playwright

    import brandguard.report.html as report_html
    from brandguard.report import write_html_report

    monkeypatch.setattr(report_html, "CARDS_PER_FILE", 3)  # several card files: loaded only when shown
    photos = sorted(Path(small_dataset.listings_dir).rglob("*.jpg"))[:15]
    assert len(photos) == 15
    preds = _predictions(small_index, photos)
    page_path = write_html_report(preds, tmp_path / "report.html", index=small_index, max_items=6)
    assert sorted(p.name for p in (tmp_path / "report_files").glob("cards-*.js")) == ["cards-0000.js",
                                                                                       "cards-0001.js"]

    requests: list[str] = []
    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(page_path.resolve().as_uri())
            page.wait_for_selector("section.card")

            def rows() -> list[dict[str, str]]:
                return page.eval_on_selector_all(
                    "#rows tbody tr[data-path]",
                    "trs => trs.map(t => ({path: t.dataset.path, verdict: t.dataset.verdict, score: t.dataset.score}))")

            def all_images_loaded() -> None:
                page.wait_for_function(
                    "() => [...document.querySelectorAll('#cards img')].every(i => i.complete)")
                broken = page.eval_on_selector_all(
                    "#cards img", "imgs => imgs.filter(i => !(i.naturalWidth > 0)).map(i => i.src)")
                assert broken == []

            # opens on the flagged rows, highest score first, with their cards
            shown = rows()
            assert [r["verdict"] for r in shown] == ["counterfeit"] * 8
            scores = [float(r["score"]) for r in shown]
            assert scores == sorted(scores, reverse=True)
            page.wait_for_function("() => document.querySelectorAll('section.card').length === 6")
            cards = page.eval_on_selector_all("section.card", "cs => cs.map(c => c.dataset.source)")
            assert cards == [r["path"] for r in shown[:6]]
            # every card shows the photo, the aligned crop, its heat and the aligned reference, and they load
            page.evaluate("() => document.querySelectorAll('#cards img').forEach(i => i.loading = 'eager')")
            assert page.locator("#cards img").count() == 6 * 4
            all_images_loaded()
            assert "8 of 15 rows match" in page.inner_text("#match-count")
            assert "2 flagged row(s) on this page rank below the card limit of 6" in page.inner_text("#cards-info")
            first = page.locator("section.card").first
            assert "fired" in first.inner_text() and "demo note" in first.inner_text()
            assert "ACNE" in page.locator("section.card").nth(1).inner_text()

            # sorting: ascending, then by path
            page.click("#rows th[data-key=score]")
            scores = [float(r["score"]) for r in rows()]
            assert scores == sorted(scores) and len(scores) == 8
            assert page.get_attribute("#rows th[data-key=score]", "aria-sort") == "ascending"
            page.click("#rows th[data-key=path]")
            paths = [r["path"] for r in rows()]
            assert paths == sorted(paths)

            # filtering: every verdict, then one verdict, then a search, then page by page
            page.select_option("#f-verdict", "")
            assert len(rows()) == 15
            page.select_option("#f-verdict", "unknown")
            assert [r["verdict"] for r in rows()] == ["unknown", "unknown"]
            assert page.locator("section.card").count() == 0
            page.select_option("#f-verdict", "")
            page.fill("#f-search", photos[3].name)
            assert [Path(r["path"]).name for r in rows()] == [photos[3].name]
            page.fill("#f-search", "")
            page.select_option("#f-size", "10")
            assert len(rows()) == 10 and "page 1 of 2" in page.inner_text("#page-info")
            page.click("#next")
            assert len(rows()) == 5 and "page 2 of 2" in page.inner_text("#page-info")
            page.select_option("#f-channel", "structure")
            assert len(rows()) == 10 and all(r["verdict"] in ("counterfeit", "authentic") for r in rows())

            page.select_option("#f-channel", "")
            page.select_option("#f-verdict", "flagged")
            page.wait_for_function("() => document.querySelectorAll('section.card').length === 6")
            all_images_loaded()
            shot = tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=False)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    assert errors == []
    assert requests and all(u.startswith("file://") for u in requests), [u for u in requests if not u.startswith("file://")]
