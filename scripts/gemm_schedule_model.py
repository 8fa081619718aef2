#!/usr/bin/env python3
"""A model of the fused GEMM's synchronization (kernels/gemm.cu, gemm/mainloop.cuh), run under random interleavings.

One producer fills a ring of S stages with the k blocks of T tiles in order; consumer warpgroups wait on each
stage's full barrier by parity, release it (empty barrier) once the next stage's wgmma is issued, as the kernel
does. Cooperative: both consumers multiply every stage. Ping-pong: tile i is consumer i % 2's, each skips the
other's ring slots, and they take turns on two named barriers (consumer 1 passes the first turn when T > 0; every
turn passes on but the block's last). Mbarriers are modelled by their completion counts with the hardware's parity
test, so a waiter two phases behind would pass wrongly and be caught.

Checks, for every T in 0..7, k blocks in 1..7, S in {2, 3, 4, 5, 8} and 30 interleavings each: no deadlock, every
consumer reads the k block it expects, no warpgroup arrives twice in one named-barrier phase, and no named barrier is
left half-arrived. Exit status 1 on any failure.

    python3 scripts/gemm_schedule_model.py
"""
import random
import sys


def run(tiles, k_blocks, stages, seed, pingpong):
    rnd = random.Random(seed)
    full = [0] * stages  # completions
    empty = [0] * stages
    empty_arrivals = [0] * stages
    data = [None] * stages
    empty_count = 1 if pingpong else 2
    named = {c: {"count": 0, "arrived": set(), "phase": 0} for c in (0, 1)}  # consumer c's turn barrier
    errors = []

    def passed(completions, parity):
        return (completions & 1) != parity

    def producer():
        stage, phase = 0, 0
        for i in range(tiles):
            for kb in range(k_blocks):
                while not passed(empty[stage], phase ^ 1):
                    yield
                data[stage] = (i, kb)
                full[stage] += 1
                stage += 1
                if stage == stages:
                    stage, phase = 0, phase ^ 1

    def arrive(barrier, wg):
        b = named[barrier]
        if wg in b["arrived"]:
            errors.append(f"consumer {wg} arrived twice in one phase of barrier {barrier}")
        b["arrived"].add(wg)
        b["count"] += 1
        if b["count"] == 2:
            b.update(count=0, arrived=set(), phase=b["phase"] + 1)

    def sync(barrier, wg):
        phase = named[barrier]["phase"]
        arrive(barrier, wg)
        while named[barrier]["phase"] == phase:
            yield

    def release(stage):
        empty_arrivals[stage] += 1
        if empty_arrivals[stage] == empty_count:
            empty_arrivals[stage] = 0
            empty[stage] += 1

    def consumer(c):
        ring = {"stage": 0, "phase": 0}

        def skip(steps):
            ring["stage"] += steps
            ring["phase"] ^= (ring["stage"] // stages) & 1
            ring["stage"] %= stages

        def tile(i, issued):
            previous = -1
            for kb in range(k_blocks):
                s = ring["stage"]
                while not passed(full[s], ring["phase"]):
                    yield
                if data[s] != (i, kb):
                    errors.append(f"consumer {c} read {data[s]}, expected {(i, kb)}")
                yield  # the wgmma group runs
                if previous >= 0:
                    release(previous)
                previous = s
                skip(1)
            issued()
            yield
            if previous >= 0:
                release(previous)

        if not pingpong:
            for i in range(tiles):
                yield from tile(i, lambda: None)
            return
        skip(c * k_blocks)
        if c == 1 and tiles > 0:
            arrive(0, 1)
        for i in range(c, tiles, 2):
            yield from sync(c, c)
            last = i == tiles - 1
            yield from tile(i, lambda: None if last else arrive(c ^ 1, c))
            skip(k_blocks)
            yield  # the epilogue

    agents = [producer(), consumer(0), consumer(1)]
    alive = [0, 1, 2]
    for _ in range(200000):
        if not alive:
            break
        a = rnd.choice(alive)
        try:
            next(agents[a])
        except StopIteration:
            alive.remove(a)
    else:
        errors.append("deadlock")
    errors += [f"barrier {c} left with {b['count']} arrivals" for c, b in named.items() if b["count"]]
    return errors


def main():
    failures = 0
    for pingpong in (False, True):
        for tiles in range(8):
            for k_blocks in range(1, 8):
                for stages in (2, 3, 4, 5, 8):
                    for seed in range(30):
                        errors = run(tiles, k_blocks, stages, seed, pingpong)
                        if errors:
                            failures += 1
                            if failures <= 10:
                                print(f"pingpong={pingpong} T={tiles} k_blocks={k_blocks} S={stages} seed={seed}: "
                                      f"{errors[:3]}")
    print(f"gemm schedule model: {failures} failing runs")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
