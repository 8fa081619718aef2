#!/usr/bin/env python3
"""The same-run attention table of a results folder: flashclip's bench.md (dist/gpu/run.sh bench) against
PyTorch's sdpa.json (run.sh peers) from one GPU run, packed QKV layout.

usage: scripts/same_run_table.py RUN_DIR > table.md

"dispatch" is the version `attention::Version::fastest` picks on an H100 (v3 for causal masking at head dims 64
and 80, v4 otherwise); keep it in step with src/attention.rs when that rule changes.
"""
import json
import re
import sys
from pathlib import Path

GOAL = 1.1
TARGET_SHAPES = {(16, 16, 577, 64, False), (256, 16, 577, 64, False), (1, 16, 577, 64, False),
                 (16, 16, 257, 64, False), (16, 16, 257, 80, False), (16, 12, 77, 64, True)}
DTYPES = {"f16": "fp16", "bf16": "bf16"}


def dispatch(head_dim, causal):
    return "v3" if causal and head_dim < 96 else "v4"


def main(run):
    ours = {}  # (B, H, N, D, causal, dtype) -> {version: median us}
    for line in (run / "bench.md").read_text().splitlines():
        m = re.match(r"\| B(\d+) H(\d+) N(\d+) D(\d+)( causal)? \| (\w+) \| ([^|]+?) \| ([\d.]+) \|", line)
        if m:
            key = tuple(int(x) for x in m.group(1, 2, 3, 4)) + (m.group(5) is not None, DTYPES[m.group(6)])
            ours.setdefault(key, {})[m.group(7)] = float(m.group(8))
    peers = {}
    for r in json.loads((run / "sdpa.json").read_text())["results"]:
        if r["layout"] == "packed":
            key = (r["B"], r["H"], r["N"], r["D"], r["causal"], r["dtype"])
            peers[key] = {b: v["median_us"] for b, v in r["backends"].items()}
    print("| shape | dtype | v2 | v3 | v4 | dispatch | cuDNN | FA2 (flash) | mem-efficient | best PyTorch "
          "| speed-up vs best PyTorch | goal 1.1x |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in sorted(ours, key=lambda k: (k[5] != "fp16", list(ours).index(k))):
        if key not in peers:
            continue
        b, h, n, d, causal, dtype = key
        mine, theirs = ours[key], peers[key]
        picked = dispatch(d, causal)
        best = min(theirs, key=theirs.get)
        ratio = theirs[best] / mine[picked]
        goal = ("met" if ratio >= GOAL else "missed") if (b, h, n, d, causal) in TARGET_SHAPES else "report"
        cell = lambda v: f"{v:.1f}" if v is not None else "-"
        print(f"| B{b} H{h} N{n} D{d}{' causal' if causal else ''} | {dtype} | {cell(mine.get('v2'))} "
              f"| {cell(mine.get('v3'))} | {cell(mine.get('v4'))} | {picked} {mine[picked]:.1f} "
              f"| {cell(theirs.get('cudnn'))} | {cell(theirs.get('flash'))} | {cell(theirs.get('efficient'))} "
              f"| {theirs[best]:.1f} ({best}) | {ratio:.2f}x | {goal} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
