"""Views of a product: which of its reference photos align with each other, and where the product lies in one.

Brands share references as they have them: a clean catalogue image, hand-held photos over a busy shelf,
another face of the carton. One homography cannot bring them all into one frame, so a product's references
are grouped into **views**: connected groups of references whose pairwise homographies have enough inliers
(:func:`align_views`). Each view has its own anchor, canonical frame, keypoints and comparison bank in the
index; a reference that aligns with nothing is a view of its own.

Which keypoints of a reference belong to the product? With several aligned references, those seen again in
another one (and those inside the region the repeated ones cover). A lone reference has nothing to repeat
against, so :func:`product_mask` finds the product in it: the foreground of a studio or catalogue shot on a
plain background, else the keypoints it shares with other views of the product (other faces carry the same
logo), else the densest cluster of keypoints (a hand-held product fills the middle of the photo; a shelf
behind it is spread thinner).

Example:
    >>> import numpy as np
    >>> inl = np.array([[0, 50, 0], [50, 0, 3], [0, 3, 0]])
    >>> align_views(inl, 20)
    [[0, 1], [2]]
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["align_views", "chain_to_anchor", "choose_anchor", "product_mask"]

#: a border pixel is background when it lies this close (max over RGB channels, 0..255) to the border's median
_PLAIN_TOLERANCE = 28
#: share of the border that must be background for a photo to count as shot on a plain background
_PLAIN_SHARE = 0.85


def align_views(inliers: np.ndarray, min_inliers: int) -> list[list[int]]:
    """Connected groups of references that align with each other.

    Args:
        inliers: ``(n, n)`` symmetric matrix of RANSAC inliers of each pair's homography (0: none).
        min_inliers: a pair with at least this many inliers aligns.

    Returns:
        groups of reference positions, each ascending, ordered by their first member; every position is in
        exactly one group (a reference that aligns with nothing is a group of its own).
    """
    n = len(inliers)
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            if inliers[i, j] >= min_inliers:
                a, b = root(i), root(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def choose_anchor(group: list[int], inliers: np.ndarray) -> int:
    """The reference of ``group`` with the most inliers to the others; ties go to the first position (callers
    order references by content digest, so the choice never depends on file names)."""
    sums = inliers[np.ix_(group, group)].sum(1)
    return group[int(np.argmax(sums))]


def chain_to_anchor(group: list[int], anchor: int, inliers: np.ndarray, homographies: dict[tuple[int, int], np.ndarray],
                    min_inliers: int) -> dict[int, tuple[np.ndarray, int]]:
    """Homographies from each reference of ``group`` to ``anchor`` along the strongest chain of pairs.

    The chain is the maximum spanning tree of the pairs with at least ``min_inliers`` inliers (Prim's, from the
    anchor), so each reference reaches the anchor through its best-aligned neighbours.

    Args:
        homographies: ``{(i, j): H}`` mapping reference ``i``'s pixels to reference ``j``'s.

    Returns:
        ``{position: (H to the anchor's pixels, inliers of the pair that joined it)}``; the anchor maps by the
        identity with ``-1`` inliers. References the tree does not reach are left out.
    """
    out: dict[int, tuple[np.ndarray, int]] = {anchor: (np.eye(3), -1)}
    members = set(group)
    while True:
        best: tuple[int, int, int] | None = None  # (inliers, new reference, its parent in the tree)
        for j in sorted(out):
            for i in sorted(members - set(out)):
                k = int(inliers[i, j])
                if k >= min_inliers and (i, j) in homographies and (best is None or k > best[0]):
                    best = (k, i, j)
        if best is None:
            return out
        k, i, j = best
        H = out[j][0] @ homographies[(i, j)]
        out[i] = (H / H[2, 2], k)


def product_mask(image: np.ndarray, keypoints_xy: np.ndarray, shared_xy: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """Where the product lies in a lone reference photo (one that no other reference repeats).

    In order of preference:

    * ``"plain background"``: a studio or catalogue shot (85% of the border within a small colour distance of
      its median): the largest connected region that is not background flooding in from the border (holes
      filled).
    * ``"shared keypoints"``: ``shared_xy`` holds 8 or more keypoints matched in other views of the same
      product (another face carries the same logo): their convex hull, grown by a quarter of its size.
    * ``"densest keypoints"``: a hand-held photo: the keypoint density (Gaussian, a tenth of the long side),
      weighted towards the middle of the photo where people hold what they photograph (Gaussian, 0.3 of
      the size), above half its peak: the connected region around the peak.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        keypoints_xy: ``(K, 2)`` keypoint positions in ``image`` pixels.
        shared_xy: ``(M, 2)`` positions of the keypoints matched in other views, or None.

    Returns:
        ``(mask, how)``: an ``(H, W)`` bool mask of the product (the whole photo when nothing better is found:
        ``"whole photo"``) and which rule found it.
    """
    h, w = image.shape[:2]
    fg = _plain_foreground(image)
    if fg is not None:
        return fg, "plain background"
    if shared_xy is not None and len(shared_xy) >= 8:
        hull = cv2.convexHull(shared_xy.astype(np.float32)).reshape(-1, 2)
        centre = hull.mean(0)
        grown = centre + 1.25 * (hull - centre)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(mask, np.round(grown).astype(np.int32), 1)
        if mask.sum() >= 0.02 * h * w:
            return mask.astype(bool), "shared keypoints"
    if len(keypoints_xy) >= 16:
        scale = 64.0 / max(h, w)
        gh, gw = max(1, round(h * scale)), max(1, round(w * scale))
        grid = np.zeros((gh, gw), np.float32)
        gx = np.clip((keypoints_xy[:, 0] * scale).astype(int), 0, gw - 1)
        gy = np.clip((keypoints_xy[:, 1] * scale).astype(int), 0, gh - 1)
        np.add.at(grid, (gy, gx), 1.0)
        dens = cv2.GaussianBlur(grid, (0, 0), 6.4)
        yy, xx = np.mgrid[0:gh, 0:gw]
        dens *= np.exp(-(((xx + 0.5) / gw - 0.5) ** 2 + ((yy + 0.5) / gh - 0.5) ** 2) / (2 * 0.3 ** 2))
        peak = np.unravel_index(int(np.argmax(dens)), dens.shape)
        _, labels = cv2.connectedComponents((dens >= 0.5 * dens[peak]).astype(np.uint8))
        small = (labels == labels[peak]).astype(np.uint8)
        mask = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
        if mask.sum() >= 0.05 * h * w:
            return mask, "densest keypoints"
    return np.ones((h, w), bool), "whole photo"


def _plain_foreground(image: np.ndarray) -> np.ndarray | None:
    """The product of a photo on a plain background (see :func:`product_mask`), or None when the background
    is not plain or nothing stands out of it."""
    h, w = image.shape[:2]
    b = max(2, round(0.01 * max(h, w)))
    border = np.concatenate([image[:b].reshape(-1, 3), image[-b:].reshape(-1, 3),
                             image[:, :b].reshape(-1, 3), image[:, -b:].reshape(-1, 3)]).astype(np.int16)
    colour = np.median(border, axis=0)
    if np.mean(np.abs(border - colour).max(1) <= _PLAIN_TOLERANCE) < _PLAIN_SHARE:
        return None
    bg_like = (np.abs(image.astype(np.int16) - colour).max(2) <= _PLAIN_TOLERANCE).astype(np.uint8)
    n, labels = cv2.connectedComponents(bg_like, connectivity=4)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    background = np.isin(labels, edge[edge > 0]) & (bg_like > 0)
    fg = (~background).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg, connectivity=8)
    if n <= 1:
        return None
    k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    area = stats[k, cv2.CC_STAT_AREA]
    if area < 0.02 * h * w or area > 0.97 * h * w:
        return None
    contours, _ = cv2.findContours((labels == k).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros((h, w), np.uint8)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)
