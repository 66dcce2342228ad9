"""Two-sided contrastive losses: StaPO bounds the contrastive logit from both sides.

StaPO (OpenReview ke1f4IVR47) is known only from its abstract: one-sided contrastive losses push the
contrastive logit (log-prob of chosen minus rejected) up without bound; a left margin keeps preference
learning, a right margin stops the growth that erodes fluency. The exact published loss is NOT available.
What follows is prefkit's reconstruction, in three variants (docs/losses.md, "Two-sided contrastive: StaPO").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from prefkit.losses.registry import LossOutput, register, require

# loss of u = β·c given the band (lo, hi) and the weight lam of the right side
_VARIANTS = {
    "smooth": lambda u, lo, hi, lam: F.softplus(lo - u) + lam * F.softplus(u - hi),
    "hinge": lambda u, lo, hi, lam: torch.relu(lo - u) + lam * torch.relu(u - hi),
    "clipped": lambda u, lo, hi, lam: -F.logsigmoid(torch.clamp(u, max=hi) - lo),
}


@register("stapo", family="two-sided", paper="StaPO, OpenReview ke1f4IVR47 (reconstruction; exact loss unpublished)",
          reference_when=lambda reference_based, **_: reference_based)
def stapo(chosen_logps, rejected_logps, ref_chosen_logps=None, ref_rejected_logps=None, chosen_lengths=None,
          rejected_lengths=None, *, beta=2.0, left_margin=1.0, right_margin=4.0, lam=1.0, variant="smooth",
          average=True, reference_based=False) -> LossOutput:
    """StaPO (reconstructed): keep u = β·c inside the band (left_margin, right_margin), c the contrastive logit.

    smooth (default): sp(γ_L - u) + λ·sp(u - γ_R); pushes up below the band, down above it, convex, minimum at
        the band's centre for λ = 1; right_margin -> ∞ recovers SimPO (average, reference-free).
    hinge: max(0, γ_L - u) + λ·max(0, u - γ_R); exactly flat inside the band.
    clipped: -log σ(min(u, γ_R) - γ_L); growth stops above the band but is not pushed back.

    c is the difference of per-token (average=True) or summed log-probs; with reference_based=True the
    reference's log-probs are subtracted first (c = h of DPO). This is a reconstruction: the published form
    is not available."""
    require(right_margin > left_margin, "stapo", "right_margin", f"must exceed left_margin ({left_margin})")
    require(variant in _VARIANTS, "stapo", "variant", f"must be one of {', '.join(_VARIANTS)} (got {variant!r})")
    w, l = chosen_logps, rejected_logps
    if reference_based:
        require(ref_chosen_logps is not None and ref_rejected_logps is not None, "stapo", "reference_based",
                "needs ref_chosen_logps and ref_rejected_logps")
        w, l = w - ref_chosen_logps, l - ref_rejected_logps
    if average:
        require(chosen_lengths is not None and rejected_lengths is not None, "stapo", "average",
                "needs chosen_lengths and rejected_lengths (or set average=False)")
        w, l = w / chosen_lengths.clamp(min=1), l / rejected_lengths.clamp(min=1)
    u = beta * (w - l)
    loss = _VARIANTS[variant](u, left_margin, right_margin, lam)
    band = {
        "stapo/below": (u < left_margin).float().mean(),
        "stapo/inside": ((u >= left_margin) & (u <= right_margin)).float().mean(),
        "stapo/above": (u > right_margin).float().mean(),
    }
    return LossOutput(loss, beta * w, beta * l, band)
