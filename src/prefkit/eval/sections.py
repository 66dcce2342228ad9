"""An evaluation dict (evaluate_model's result) as report sections: one (heading, body, images) triple per
evaluated section, with the numbers in tables and a line on how to read them."""

from __future__ import annotations

from pathlib import Path


def _f(x, digits: int = 3):
    return None if x is None else round(float(x), digits)


def _ranking(s: dict) -> list:
    rows = [{"metric": "ranking accuracy R", "model": _f(s["ranking_accuracy"]),
             "reference": _f(s.get("reference_ranking_accuracy"))},
            {"metric": "length-normalised R̃", "model": _f(s["ranking_accuracy_normalised"]),
             "reference": _f(s.get("reference_ranking_accuracy_normalised"))}]
    blocks = [f"{s['pairs']} pairs. R counts pairs where π(y_w) ≥ π(y_l) (summed log-probs), R̃ compares "
              "per-token averages (arXiv 2405.19534).", rows]
    if "idealised_ranking_accuracy" in s:
        flips, rewards = s["flips"], s["rewards"]
        blocks.append([{"metric": "idealised R* (α = 1 − ε)", "value": _f(s["idealised_ranking_accuracy"])},
                       {"metric": "pairs flipped (fixed / broken)",
                        "value": f"{flips['flipped']} ({flips['fixed']} / {flips['broken']})"},
                       {"metric": "reference's misranked pairs fixed", "value": _f(flips["fixed_fraction"])},
                       *({"metric": k, "value": _f(rewards[k])} for k in
                         ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")),
                       {"metric": "margin median [q05, q95]", "value": f"{_f(rewards['margin']['q50'])} "
                        f"[{_f(rewards['margin']['q05'])}, {_f(rewards['margin']['q95'])}]"}])
        blocks.append(f"R* is the ranking accuracy a perfectly optimised DPO/RLHF policy would reach from this "
                      f"reference with β = {s['beta']} and ε = {s['epsilon']}.")
    return blocks


def _win_rate(s: dict) -> list:
    return [f"P(model's sample beats the reference's) under judge `{s['judge']}`, {s['comparisons']} "
            f"comparisons, each judged in both orders.",
            [{"win rate": _f(s["win_rate"]), f"{round(s['confidence'] * 100)}% CI low": _f(s["ci_low"]),
              "CI high": _f(s["ci_high"]), "interval": s["method"]}]]


def _generation(s: dict) -> list:
    rows = []
    for who in ("model", "reference"):
        if who in s:
            g = s[who]
            rows.append({"policy": who, "token entropy": _f(g["token_entropy"]),
                         **{f"H{n}": _f(v) for n, v in g["ngram_entropy"].items()},
                         "distinct-1": _f(g["distinct"]["1"]), "distinct-2": _f(g["distinct"]["2"]),
                         "rep-1": _f(g["repetition"]["1"]), "mean length": _f(g["length"]["mean"], 2),
                         "median": g["length"]["median"], "max": g["length"]["max"],
                         "ended with EOS": _f(g["length"]["stopped"])})
    examples = [{"prompt": e["prompt"], "model sample": e["response"]} for e in s["model"]["examples"]]
    return [f"{s['samples_per_prompt']} samples on each of {s['prompts']} prompts (temperature "
            f"{s['temperature']}, at most {s['max_new_tokens']} new tokens). Token entropy is the mean predictive "
            "entropy on the model's own samples; Hn is the n-gram entropy of the text (nats).", rows, examples]


def _exact_gap(s: dict) -> list:
    rows = []
    for index, row in enumerate(s["model"]["prompts"]):
        entry = {"prompt": row["prompt"], "gap": _f(row["gap"], 4), "outside": _f(row["outside"], 4)}
        if "reference" in s:
            ref = s["reference"]["prompts"][index]
            entry.update({"reference gap": _f(ref["gap"], 4), "reference outside": _f(ref["outside"], 4)})
        rows.append(entry)
    mean = {"prompt": "**mean**", "gap": _f(s["model"]["mean_gap"], 4), "outside": _f(s["model"]["mean_outside"], 4)}
    if "reference" in s:
        mean.update({"reference gap": _f(s["reference"]["mean_gap"], 4),
                     "reference outside": _f(s["reference"]["mean_outside"], 4)})
    return ["Exact duality gap 2·max_y P(y beats π) − 1 of the distribution renormalised on the canonical "
            "responses (0 at the Nash equilibrium); 'outside' is the probability of any other response.",
            rows + [mean]]


def _exact_win_rate(s: dict) -> list:
    rows = [{"prompts": kind, "win rate": _f(rate)} for kind, rate in s["by_kind"].items()]
    rows.append({"prompts": "**all**", "win rate": _f(s["win_rate"])})
    return ["Exact P(the model's answer beats the reference's) under the task's oracle, over each eval prompt's "
            "canonical answers with the mass outside them counted as malformed (it ties with malformed answers "
            f"and loses to well-formed ones); ½ is no better than the reference. Mass outside the canonical answers: "
            f"{_f(s['mean_outside'])} (reference {_f(s['reference_mean_outside'])}).", rows]


def _entanglement(s: dict) -> list:
    rows = [{"statistic": name, "mean": _f(s[key]["mean"]), "median": _f(s[key]["q50"])} for name, key in
            (("cos(g_w, g_l)", "cosine"), ("‖g_w‖", "norm_chosen"), ("‖g_l‖", "norm_rejected"),
             ("⟨g_w,g_l⟩/‖g_w‖²", "ratio_chosen"), ("⟨g_w,g_l⟩/‖g_l‖²", "ratio_rejected"))]
    return [f"Per-pair gradients of log π(y_w) and log π(y_l) over `{s['params']}`, {s['pairs']} pairs "
            "(arXiv 2410.13828).", rows,
            f"Under a DPO step, to first order: {_f(s['both_correct'])} of pairs move both ways as intended, "
            f"{_f(s['entangled'])} are entangled ({_f(s['both_rise'])} both rise, {_f(s['both_fall'])} both fall)."]


# section name -> (heading, body builder, figures shown with it)
SECTION_VIEWS = {
    "ranking": ("Ranking accuracy and reward margins", _ranking, ("ranking_margins",)),
    "win_rate": ("Win rate against the reference", _win_rate, ()),
    "generation": ("Generation entropy and length", _generation, ("generation_entropy",)),
    "exact_gap": ("Exact duality gaps (bundled task)", _exact_gap, ("exact_gaps",)),
    "exact_win_rate": ("Exact win rate against the reference (bundled task)", _exact_win_rate, ()),
    "entanglement": ("Gradient entanglement", _entanglement, ("entanglement_cosines",)),
}


def verdict(results: dict) -> list[str]:
    """What the evaluation says against the reference, one line per comparison it can make: ranking accuracy
    (beyond two binomial standard errors or within noise), the win rate's interval against ½, the exact win rate
    on the task, the exact gap and
    the generation entropy (the model's value beside the reference's)."""
    s, lines = results["sections"], []
    if "ranking" in s and s["ranking"].get("reference_ranking_accuracy") is not None:
        r, ref, n = s["ranking"]["ranking_accuracy"], s["ranking"]["reference_ranking_accuracy"], s["ranking"]["pairs"]
        noise = 2 * (max(ref * (1 - ref), 0.25 / max(n, 1)) / max(n, 1)) ** 0.5
        word = "**improved**" if r - ref > noise else "**got worse**" if ref - r > noise else "within noise"
        lines.append(f"ranking accuracy R {word}: {r:.3f} against the reference's {ref:.3f} ({n} pairs)")
    if "win_rate" in s:
        w = s["win_rate"]
        side = ("**beats** the reference" if w["ci_low"] > 0.5 else "**loses** to the reference"
                if w["ci_high"] < 0.5 else "is **not distinguishable** from the reference")
        lines.append(f"the model {side}: win rate {w['win_rate']:.3f} [{w['ci_low']:.3f}, {w['ci_high']:.3f}]")
    if "exact_win_rate" in s:
        rate = s["exact_win_rate"]["win_rate"]
        side = "**beats**" if rate > 0.5 else "**loses** to" if rate < 0.5 else "ties"
        lines.append(f"the model {side} the reference exactly: win rate {rate:.3f} under the task's oracle")
    gap, generation = s.get("exact_gap", {}), s.get("generation", {})
    if "reference" in gap:
        lines.append(f"exact duality gap {gap['model']['mean_gap']:.4f} against the reference's "
                     f"{gap['reference']['mean_gap']:.4f}")
    if "reference" in generation:
        lines.append(f"token entropy {generation['model']['token_entropy']:.3f} nats against the reference's "
                     f"{generation['reference']['token_entropy']:.3f}")
    return lines


def report_sections(results: dict, figures: dict[str, Path], header: str | None = None) -> list[tuple]:
    """The verdict (when there is a reference to compare with), report sections for every evaluated section (in
    evaluation order), then what was skipped and why."""
    lines = verdict(results)
    out = [("Verdict", "\n".join(f"- {line}" for line in lines), ())] if lines else []
    out += [("Run", header, ())] if header else []
    for name, section in results["sections"].items():
        heading, body, names = SECTION_VIEWS[name]
        out.append((heading, body(section), [figures[n] for n in names if n in figures]))
    if results.get("skipped"):
        out.append(("Not evaluated", [{"section": k, "reason": v} for k, v in results["skipped"].items()], ()))
    return out
