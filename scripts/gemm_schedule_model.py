#!/usr/bin/env python3
"""A model of the fused GEMM's synchronization (kernels/gemm.cu, gemm/mainloop.cuh), run under random interleavings.

One producer fills a ring of S stages with the k blocks of T tiles in order; consumer warpgroups wait on each
stage's full barrier by parity, release it (empty barrier) once the next stage's wgmma is issued, as the kernel
does. Cooperative: both consumers multiply every stage. Ping-pong: tile i is consumer i % 2's, each skips the
other's ring slots, and they take turns on two named barriers (consumer 1 passes the first turn when T > 0; every
turn passes on but the block's last). Mbarriers are modelled by their completion counts with the hardware's parity
test, so a waiter two phases behind would pass wrongly and be caught.

Cluster (the cooperative schedule in clusters of two blocks): each block's producer loads its A part into its own
stage and its half of B into the same stage of both blocks (a multicast); the copies land in any order, each
counting on the full barrier of the block it lands in, which completes once that block's producer has arrived and
all three parts (A, B half 0, B half 1) are in. Every consumer releases a stage in both blocks, so a stage's empty
barrier takes four arrivals. The model also checks that no part is overwritten while a consumer may still read it,
and that nothing is still in flight to a block when both have finished (the kernel's closing cluster barrier).

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


def run_cluster(tiles, k_blocks, stages, seed):
    """The cooperative schedule in a cluster of two blocks, B multicast (see the module docstring)."""
    rnd = random.Random(seed)
    blocks = (0, 1)
    full = [[0] * stages for _ in blocks]  # completions
    arrived = [[False] * stages for _ in blocks]  # the producer's arrival in the phase being assembled
    parts = [[0] * stages for _ in blocks]
    empty = [[0] * stages for _ in blocks]
    empty_arrivals = [[0] * stages for _ in blocks]
    data = [[[None] * 3 for _ in range(stages)] for _ in blocks]  # A, B half 0, B half 1
    in_flight = []  # (block, stage, part, tag): TMA copies issued, not landed
    errors = []

    def passed(completions, parity):
        return (completions & 1) != parity

    def complete_if_done(b, s):
        if arrived[b][s] and parts[b][s] == 3:
            arrived[b][s], parts[b][s] = False, 0
            full[b][s] += 1

    def producer(r):
        stage, phase = 0, 0
        for i in range(tiles):
            for kb in range(k_blocks):
                while not passed(empty[r][stage], phase ^ 1):
                    yield
                arrived[r][stage] = True
                complete_if_done(r, stage)
                in_flight.append((r, stage, 0, (i, kb)))
                in_flight.extend((b, stage, 1 + r, (i, kb)) for b in blocks)
                stage += 1
                if stage == stages:
                    stage, phase = 0, phase ^ 1

    def tma():
        while True:
            if in_flight:
                b, s, part, tag = in_flight.pop(rnd.randrange(len(in_flight)))
                data[b][s][part] = tag
                parts[b][s] += 1
                complete_if_done(b, s)
            yield

    def release(s, r, c, expect):
        if data[r][s] != [expect] * 3:
            errors.append(f"block {r} consumer {c}: stage {s} overwritten while read ({data[r][s]}, {expect})")
        for b in blocks:
            empty_arrivals[b][s] += 1
            if empty_arrivals[b][s] == 4:
                empty_arrivals[b][s] = 0
                empty[b][s] += 1

    def consumer(r, c):
        stage, phase = 0, 0
        for i in range(tiles):
            previous = None
            for kb in range(k_blocks):
                while not passed(full[r][stage], phase):
                    yield
                if data[r][stage] != [(i, kb)] * 3:
                    errors.append(f"block {r} consumer {c} read {data[r][stage]}, expected {(i, kb)}")
                yield  # the wgmma group runs
                if previous is not None:
                    release(*previous)
                previous = (stage, r, c, (i, kb))
                stage += 1
                if stage == stages:
                    stage, phase = 0, phase ^ 1
            yield
            if previous is not None:
                release(*previous)

    agents = [producer(0), producer(1), consumer(0, 0), consumer(0, 1), consumer(1, 0), consumer(1, 1)]
    alive = list(range(len(agents)))
    copier = tma()
    for _ in range(400000):
        if not alive:
            break
        if rnd.random() < 0.3:
            next(copier)
            continue
        a = rnd.choice(alive)
        try:
            next(agents[a])
        except StopIteration:
            alive.remove(a)
    else:
        errors.append("deadlock")
    if in_flight:
        errors.append(f"{len(in_flight)} copies still in flight when both blocks finished")
    return errors


def main():
    failures = 0
    for mode in ("cooperative", "pingpong", "cluster"):
        for tiles in range(8):
            for k_blocks in range(1, 8):
                for stages in (2, 3, 4, 5, 8):
                    for seed in range(30):
                        if mode == "cluster":
                            errors = run_cluster(tiles, k_blocks, stages, seed)
                        else:
                            errors = run(tiles, k_blocks, stages, seed, mode == "pingpong")
                        if errors:
                            failures += 1
                            if failures <= 10:
                                print(f"{mode} T={tiles} k_blocks={k_blocks} S={stages} seed={seed}: {errors[:3]}")
    print(f"gemm schedule model: {failures} failing runs")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
