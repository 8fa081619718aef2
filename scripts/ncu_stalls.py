#!/usr/bin/env python3
"""Summarizes an Nsight Compute source page (ncu -i X.ncu-rep --page source --print-source sass --csv): warp
stall samples by reason, executed instructions by opcode, and the instructions with the most samples.

    scripts/ncu_stalls.py gpu-out/ncu-v4-sass.csv [--top 25]
"""
import argparse
import collections
import csv
import re


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("csv")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    rows = list(csv.reader(open(args.csv)))
    # The first line names the kernel, the second holds the column titles.
    header = next(i for i, r in enumerate(rows) if "Address" in r)
    cols = {h: i for i, h in enumerate(rows[header])}
    data = [r for r in rows[header + 1 :] if len(r) == len(rows[header])]
    reasons = [h for h in cols if h.startswith("stall_") and "Not Issued" not in h]

    def num(r, h):
        try:
            return int(r[cols[h]] or 0)
        except ValueError:
            return 0

    samples = "Warp Stall Sampling (All Samples)"
    total = sum(num(r, samples) for r in data) or 1
    by_reason = collections.Counter({h: sum(num(r, h) for r in data) for h in reasons})
    print(f"{total} stall samples")
    for h, v in by_reason.most_common(10):
        print(f"  {h[6:]:20s} {v:7d} {100 * v / total:5.1f}%")
    by_op = collections.Counter()
    for r in data:
        op = re.sub(r"^@!?U?P\w+\s+", "", r[cols["Source"]].strip()).split(" ")[0].split(".")[0]
        by_op[op] += num(r, "Instructions Executed")
    executed = sum(by_op.values()) or 1
    print(f"{executed} warp instructions executed")
    for op, v in by_op.most_common(15):
        print(f"  {op:12s} {v:10d} {100 * v / executed:5.1f}%")
    print(f"top {args.top} instructions by samples")
    for r in sorted(data, key=lambda r: -num(r, samples))[: args.top]:
        top = sorted(((num(r, h), h[6:]) for h in reasons), reverse=True)[:2]
        print(f"  {num(r, samples):6d} {r[cols['Address']][-5:]} {r[cols['Source']].strip()[:64]:64s} {top}")


if __name__ == "__main__":
    main()
