"""Real phone photos of retail cartons (tests/data/realphotos, Grocery Store Dataset, MIT licence beside it).

Hand-held, angled photos over busy shelves, a small catalogue image among the references, and photos of
sibling products (another flavour, another fat content) of the same brands that the index does not hold.
No `calibrate`: the index is used straight from `build_index`, as the README's first snippet does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data" / "realphotos"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_predictions(embedder):
    from brandguard.config import Config
    from brandguard.detector import Detector
    from brandguard.index import ReferenceIndex
    from brandguard.references import read_labels

    index = ReferenceIndex.build(DATA / "refs", Config(), embedder=embedder)
    labels = read_labels(DATA / "listings" / "labels.csv")
    preds = Detector(index, embedder).predict_batch([i.path for i in labels])
    return index, list(zip(labels, preds))


def test_every_reference_is_compared_against(real_predictions):
    """A catalogue image or a photo of another face is a view of its own, never dropped."""
    index, _ = real_predictions
    dropped = [r.path for m in index.products for r in m.refs if not r.aligned]
    assert dropped == []


def test_authentic_real_photos_are_found(real_predictions):
    """Every hand-held authentic photo is matched to its own product (none `unknown`, none another one)."""
    _, rows = real_predictions
    authentic = [(i, p) for i, p in rows if i.label == "authentic"]
    assert len(authentic) == 12
    wrong = [(Path(i.path).name, p.verdict, p.product) for i, p in authentic if p.product != i.product]
    assert wrong == []


@pytest.mark.xfail(strict=True, reason="known: Arla-Lactose-Medium-Fat-Milk_001 (the carton turned across its "
                   "edge, held in a hand) is still flagged (counterfeit at 0.993) straight after index build; see README, "
                   "'Real listing photos: what it cannot judge'")
def test_authentic_real_photos_are_not_flagged(real_predictions):
    _, rows = real_predictions
    flagged = [(Path(i.path).name, p.verdict, round(p.score, 3)) for i, p in rows
               if i.label == "authentic" and p.is_flagged]
    assert flagged == []


def test_at_most_the_known_real_photo_is_flagged(real_predictions):
    """What holds today, so that a regression is caught while the test above still fails."""
    _, rows = real_predictions
    flagged = sorted(Path(i.path).name for i, p in rows if i.label == "authentic" and p.is_flagged)
    assert set(flagged) <= {"Arla-Lactose-Medium-Fat-Milk_001.jpg"}


def test_sibling_products_are_never_flagged(real_predictions):
    """Another flavour of an indexed brand is a product the index does not hold, not a counterfeit."""
    _, rows = real_predictions
    siblings = [(i, p) for i, p in rows if i.label == "unrelated"]
    assert [(Path(i.path).name, p.verdict) for i, p in siblings if p.is_flagged] == []


def test_a_sibling_read_as_another_name_says_so(real_predictions):
    """The vanilla yoghurt matched to its indexed sibling (natural yoghurt) reads VANILJ where the references
    read NATURELL, its only reference line: another name, not a misspelling, and nothing of the indexed
    product's, so it is a product the index does not hold (`unknown`) and the reviewer is told why."""
    from brandguard.comparison import OTHER_NAME_NOTE, OTHER_PRODUCT_NOTE

    _, rows = real_predictions
    siblings = [(i, p) for i, p in rows if i.label == "unrelated"]
    assert len(siblings) == 4
    vanilla = next(p for i, p in siblings if Path(i.path).name == "Arla-Mild-Vanilla-Yoghurt_001.jpg")
    assert OTHER_NAME_NOTE in vanilla.notes and OTHER_PRODUCT_NOTE in vanilla.notes
    assert vanilla.verdict == "unknown" and vanilla.score == 0.0
