"""Condense a leaderboard's learning tables into the README's summary table (Markdown on stdout).

    .venv/bin/python scripts/learning_summary.py results/controls/scores [--measures heldout_r2,kad]

Reads ``learning_seeds.csv`` (systems trained with several seeds: mean over seeds [95 % t interval]) or,
without replicate seeds, ``learning.csv`` (one seed: the per-clip CIs). One row per encoder (and layer),
variant and alignment; per measure the trained system, its two controls and whether it beats both.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def cell(mean: float, lo: float, hi: float) -> str:
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.3g} [{lo:.3g}, {hi:.3g}]" if np.isfinite(lo) else f"{mean:.3g}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scores_dir", type=Path)
    ap.add_argument("--measures", default="heldout_r2,kad")
    args = ap.parse_args()
    seeds = args.scores_dir / "learning_seeds.csv"
    table = pd.read_csv(seeds if seeds.is_file() else args.scores_dir / "learning.csv")
    key = "system" if seeds.is_file() else "system_id"
    parts = table[key].str.split("/", expand=True)
    table["encoder_slot"], table["variant"], table["alignment"] = parts[0], parts[1], parts[4]

    def order(slot: str) -> tuple:  # encoder, then the input cut before block 1, 2, ...
        name, _, layer = slot.partition(".layer")
        return name, int(layer or 0)

    table = table.iloc[sorted(range(len(table)), key=lambda i: order(table["encoder_slot"].iloc[i]))]
    measures = args.measures.split(",")
    head = ["encoder", "gate", "alignment"]
    for m in measures:
        head += [f"{m} trained", "shuffled", "untrained", "beats both"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * 3 + "---:|---:|---:|---|" * len(measures))
    for (enc, var, al), g in table.groupby(["encoder_slot", "variant", "alignment"], sort=False):
        row = [enc, var, al]
        for m in measures:
            r = g[g["measure"] == m]
            if r.empty:
                row += ["—"] * 4
                continue
            r = r.iloc[0]
            verdict = {True: "yes", False: "no"}.get(r["beats_controls"], "—")
            if "seeds_beating_both" in r:
                verdict += f" ({int(r['seeds_beating_both'])}/{int(r['n_seeds'])} seeds)"
            row += [
                cell(r["system_value"], r["system_ci_low"], r["system_ci_high"]),
                cell(r["shuffled_value"], r["shuffled_ci_low"], r["shuffled_ci_high"]),
                cell(r["untrained_value"], r["untrained_ci_low"], r["untrained_ci_high"]),
                verdict,
            ]
        print("| " + " | ".join(row) + " |")
    ceiling = table[table["measure"] == "kad"]["ceiling_value"].dropna()
    if len(ceiling):
        print(f"\nCodec ceiling (KAD of the codec's own reconstruction): {ceiling.iloc[0]:.3g}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
