"""`prefkit losses`: print the loss catalogue (name, family, inputs, reference, defaults, paper)."""

from __future__ import annotations

import argparse
import json
import textwrap


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("losses", help="list the loss catalogue, or describe one loss",
                                   description="List every registered loss, or describe one in full.")
    parser.add_argument("name", nargs="?", help="a loss name or alias: show its formula, inputs and defaults")
    parser.add_argument("--family", help="only losses of this family (one-sided, two-sided, unpaired, ...)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(run=run)


def _short_inputs(spec) -> str:
    """Inputs with chosen/rejected twins folded: ref_chosen_logps + ref_rejected_logps -> ref_logps(w,l)."""
    folded: dict[str, list[str]] = {}
    for name in spec.inputs:
        key = name.replace("chosen_", "").replace("rejected_", "")
        folded.setdefault(key, []).append(name)
    parts = []
    for key, members in folded.items():
        text = f"{key}(w,l)" if len(members) == 2 else members[0]
        parts.append(text if members[0] in spec.required else f"[{text}]")
    return ", ".join(parts)


def _defaults(spec) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in spec.defaults.items())


def _record(spec) -> dict:
    return {"name": spec.name, "aliases": list(spec.aliases), "family": spec.family, "reference": spec.reference,
            "required_inputs": list(spec.required), "optional_inputs": list(spec.optional),
            "defaults": dict(spec.defaults), "paper": spec.paper, "summary": spec.summary}


def run(args: argparse.Namespace) -> int:
    from prefkit import losses
    from prefkit.errors import PrefkitError

    if args.name:
        spec = losses.get(args.name)
        if args.json:
            print(json.dumps(_record(spec), indent=2))
            return 0
        aliases = f" (also: {', '.join(spec.aliases)})" if spec.aliases else ""
        print(f"{spec.name}{aliases} - {spec.family}, reference: {spec.reference}\n")
        print(textwrap.indent(spec.fn.__doc__.strip() if spec.fn.__doc__ else "", "  "), "\n")
        print(f"  required inputs:  {', '.join(spec.required)}")
        print(f"  optional inputs:  {', '.join(spec.optional) or '-'}")
        print(f"  hyper-parameters: {_defaults(spec) or '-'}")
        print(f"  paper:            {spec.paper}")
        return 0

    selected = [s for s in losses.specs() if args.family in (None, s.family)]
    if not selected:
        raise PrefkitError(f"no loss of family '{args.family}'; families: {', '.join(losses.registry.FAMILIES)}")
    if args.json:
        print(json.dumps([_record(s) for s in selected], indent=2))
        return 0
    # Two lines a loss: what it is and what it reads, then its defaults and its paper.
    width = max(len(s.name) + 3 + len(", ".join(s.aliases)) * bool(s.aliases) for s in selected) + 2
    for s in selected:
        name = s.name + (f" ({', '.join(s.aliases)})" if s.aliases else "")
        print(f"{name:<{width}}{s.family:<13}ref: {s.reference:<10}{_short_inputs(s)}")
        print(f"{'':<{width}}{_defaults(s) or '(no hyper-parameters)'}  |  {s.paper}")
    print(f"\n{len(selected)} losses. `prefkit losses NAME` describes one; "
          "any list of names with weights is a mixture (e.g. RPO = dpo + 0.005 x sft).")
    return 0
