"""The two training losses, each a few lines from the literature.

* :func:`change_contrastive_loss`: the contrastive loss of siamese change detection (Zhan et al., "Change
  detection based on deep siamese convolutional network for optical aerial images", 2017), per cell of
  two aligned photos: unchanged cells are pulled under ``positive_margin``, edited cells pushed beyond
  ``negative_margin``. The distance is the one the ``learned`` comparison channel uses at scoring time
  (``1 - cosine`` to the best match among the 3x3 neighbouring cells).
* :func:`supcon_loss`: supervised contrastive loss (Khosla et al., NeurIPS 2020) on global vectors, each
  product a class; an edited photo is nobody's positive, so it is a hard negative of its own product.

Example:
    >>> import torch
    >>> from brandguard.training.losses import supcon_loss
    >>> z = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    >>> float(supcon_loss(z, torch.tensor([0, 0, 1, 1]))) > 0
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["cell_masks", "change_contrastive_loss", "neighbourhood_distance", "occlusion_loss", "supcon_loss"]


def neighbourhood_distance(q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``1 - max cosine`` of each query cell with the reference cells in its 3x3 neighbourhood.

    Args:
        q, r: ``(N, D, h, w)`` L2-normalised descriptors.

    Returns:
        ``(N, h, w)`` distances in 0..2 (the scoring-time :func:`brandguard.mismatch.learned_distance`).
    """
    h, w = q.shape[-2:]
    rp = F.pad(r, (1, 1, 1, 1))
    sims = torch.stack([(q * rp[..., dy:dy + h, dx:dx + w]).sum(1) for dy in range(3) for dx in range(3)])
    return 1.0 - sims.max(0).values


def cell_masks(changed: torch.Tensor, valid: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel masks ``(N, H, W)`` -> ``(unchanged, edited)`` cell masks ``(N, H/s, W/s)``.

    A cell is edited when at least 30% of it changed, unchanged when none of it did; cells in between and
    cells not fully inside both photos count for neither.
    """
    frac = F.avg_pool2d(changed.float()[:, None], stride)[:, 0]
    inside = F.avg_pool2d(valid.float()[:, None], stride)[:, 0] > 0.999
    near = F.max_pool2d(frac[:, None], 3, stride=1, padding=1)[:, 0] > 0
    return inside & ~near, inside & (frac >= 0.3)


def change_contrastive_loss(d: torch.Tensor, unchanged: torch.Tensor, edited: torch.Tensor,
                            positive_margin: float, negative_margin: float,
                            edited_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, unchanged part, edited part)`` of distances ``d`` (see the module docstring)."""
    zero = d.new_zeros(())
    pos = F.relu(d[unchanged] - positive_margin).pow(2).mean() if unchanged.any() else zero
    neg = F.relu(negative_margin - d[edited]).pow(2).mean() if edited.any() else zero
    return pos + edited_weight * neg, pos.detach(), neg.detach()


def occlusion_loss(logits: torch.Tensor, occluded: torch.Tensor, valid: torch.Tensor, stride: int) -> torch.Tensor:
    """Binary cross-entropy of the per-cell occlusion logits ``(N, h, w)`` against pixel masks ``(N, H, W)``:
    a cell is occluded from 25% coverage, clear when nothing covers it, ignored in between (balanced)."""
    frac = F.avg_pool2d(occluded.float()[:, None], stride)[:, 0]
    inside = F.avg_pool2d(valid.float()[:, None], stride)[:, 0] > 0.5
    pos, neg = inside & (frac >= 0.25), inside & (frac == 0)
    zero = logits.new_zeros(())
    lp = F.binary_cross_entropy_with_logits(logits[pos], torch.ones_like(logits[pos])) if pos.any() else zero
    ln = F.binary_cross_entropy_with_logits(logits[neg], torch.zeros_like(logits[neg])) if neg.any() else zero
    return 0.5 * (lp + ln)


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss of L2-normalised ``z`` ``(N, D)``; anchors without a positive are skipped."""
    sim = z @ z.t() / temperature
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    has = pos.any(1)
    if not has.any():
        return z.new_zeros(())
    mean_pos = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1)[has] / pos.sum(1)[has]
    return -mean_pos.mean()
