"""The gradient-entanglement diagnostic (Yuan et al., arXiv 2410.13828; docs/eval.md, "Metrics").

For each pair, g_w = ∇_θ log π(y_w|x) and g_l = ∇_θ log π(y_l|x) over a parameter subset. A DPO step (margin
loss with a = b) moves the log-likelihoods, to first order, by

    Δℓ_w ∝ ‖g_w‖² − ⟨g_w, g_l⟩,      Δℓ_l ∝ ⟨g_w, g_l⟩ − ‖g_l‖²,

so the chosen side rises iff r_w = ⟨g_w,g_l⟩/‖g_w‖² < 1 and the rejected side falls iff r_l = ⟨g_w,g_l⟩/‖g_l‖² < 1.
When exactly one of the two holds, both likelihoods move together ("entangled": both rise, or both fall, the
likelihood displacement of DPO). Only dot products are kept, so memory holds two gradients of the subset at a time.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from prefkit.data.examples import Example
from prefkit.errors import PrefkitError
from prefkit.eval.ranking import summary
from prefkit.modeling.logprobs import score

# Where decoder architectures keep their stack of blocks (Llama/Mistral/Qwen, GPT-2, BERT-style, others).
_LAYER_ATTRIBUTES = ("layers", "h", "layer", "blocks")


def _head(model, layers: int) -> list[torch.nn.Parameter]:
    head = model.get_output_embeddings()
    if head is None:
        raise PrefkitError(f"{type(model).__name__} has no output embeddings to take gradients of")
    return [head.weight]


def _last_layers(model, layers: int) -> list[torch.nn.Parameter]:
    decoder = model.get_decoder()
    stack = next((getattr(decoder, a) for a in _LAYER_ATTRIBUTES if isinstance(getattr(decoder, a, None),
                                                                              torch.nn.ModuleList)), None)
    if stack is None:
        raise PrefkitError(f"cannot find the layer stack of {type(decoder).__name__} (looked for "
                           f"{', '.join(_LAYER_ATTRIBUTES)}); use params='head'")
    if not 1 <= layers <= len(stack):
        raise PrefkitError(f"layers must lie in 1..{len(stack)}; got {layers}")
    return [p for block in stack[-layers:] for p in block.parameters()]


# Named parameter subsets; each maps (model, layers) to a list of parameters.
PARAMETER_SUBSETS: dict[str, Callable] = {"head": _head, "last_layers": _last_layers}


def regimes(dot, norm_w2, norm_l2) -> dict:
    """Shares of pairs by the first-order effect of a DPO step (see the module docstring): both moving the right
    way, entangled (both rise, or both fall) — from the inner products and squared norms of g_w and g_l."""
    dot, nw, nl = (np.asarray(x, dtype=float) for x in (dot, norm_w2, norm_l2))
    chosen_rises, rejected_falls = dot < nw, dot < nl
    return {"both_correct": float(np.mean(chosen_rises & rejected_falls)),
            "both_rise": float(np.mean(chosen_rises & ~rejected_falls)),
            "both_fall": float(np.mean(~chosen_rises & rejected_falls)),
            "entangled": float(np.mean(chosen_rises ^ rejected_falls))}


def pair_gradients(model, examples: list[Example], pad_token_id: int, *, params: str = "head",
                   layers: int = 1) -> dict[str, np.ndarray]:
    """Per pair: ⟨g_w, g_l⟩, ‖g_w‖², ‖g_l‖² over the chosen parameter subset (float64 arrays)."""
    if params not in PARAMETER_SUBSETS:
        raise PrefkitError(f"unknown parameter subset {params!r}; choose one of {', '.join(PARAMETER_SUBSETS)}")
    subset = PARAMETER_SUBSETS[params](model, layers)
    was_training, needed = model.training, [p.requires_grad for p in subset]
    model.eval()  # no dropout: the gradient of the function being evaluated
    out = {"dot": [], "norm_w2": [], "norm_l2": []}
    try:
        for p in subset:
            p.requires_grad_(True)
        for example in examples:
            with torch.enable_grad():
                logps = score(model, [(example.prompt_ids, list(example.completions))],
                              packing=False)
                g_w = torch.autograd.grad(logps[0], subset, retain_graph=True, allow_unused=True)
                g_l = torch.autograd.grad(logps[1], subset, allow_unused=True)
            dot = nw = nl = 0.0
            for a, b in zip(g_w, g_l):
                a = torch.zeros(()) if a is None else a.double()
                b = torch.zeros(()) if b is None else b.double()
                dot, nw, nl = dot + (a * b).sum().item(), nw + (a * a).sum().item(), nl + (b * b).sum().item()
            out["dot"].append(dot), out["norm_w2"].append(nw), out["norm_l2"].append(nl)
    finally:
        for p, flag in zip(subset, needed):
            p.requires_grad_(flag)
        model.train(was_training)
    return {k: np.array(v) for k, v in out.items()}


def entanglement_metrics(dot, norm_w2, norm_l2) -> dict:
    """cos(g_w, g_l), ‖g_w‖, ‖g_l‖, r_w and r_l summarised (mean, median, quantiles), the regime shares, and the
    per-pair cosines (for the histogram). Pairs with a zero gradient on either side are left out of the ratios."""
    dot, nw2, nl2 = (np.asarray(x, dtype=float) for x in (dot, norm_w2, norm_l2))
    nonzero = (nw2 > 0) & (nl2 > 0)
    if not nonzero.any():
        raise PrefkitError("every pair has a zero gradient on one side; nothing to measure")
    d, w2, l2 = dot[nonzero], nw2[nonzero], nl2[nonzero]
    cosine = np.clip(d / np.sqrt(w2 * l2), -1.0, 1.0)
    return {"pairs": int(nonzero.sum()), "cosine": summary(cosine), "norm_chosen": summary(np.sqrt(w2)),
            "norm_rejected": summary(np.sqrt(l2)), "ratio_chosen": summary(d / w2), "ratio_rejected": summary(d / l2),
            **regimes(d, w2, l2), "cosines": cosine.tolist()}


def gradient_entanglement(model, examples: list[Example], pad_token_id: int, *, params: str = "head",
                          layers: int = 1, max_pairs: int = 64) -> dict:
    """The diagnostic over the first `max_pairs` pairs; `params` picks the subset ('head': the output embedding
    weight, shared with the input embeddings when tied; 'last_layers': every parameter of the last `layers`
    decoder blocks)."""
    grads = pair_gradients(model, examples[:max_pairs], pad_token_id, params=params, layers=layers)
    return {"params": params if params == "head" else f"{params}:{layers}", **entanglement_metrics(**grads)}
