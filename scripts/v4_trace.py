#!/usr/bin/env python3
"""A clock64 timeline of fc_attention_v4's consumers in one block: where a key tile's cycles go.

    scripts/v4_trace.py build            # here: instrumented copy of kernels/ (v4) + harness, built
                                         # into dist/trace/v4-trace (carry dist/trace to the GPU machine)
    dist/trace/v4-trace 16 > trace.txt   # there: B16 H16 N577 D64 fp16 through fc_attention_v4, 20 warm-up
                                         # launches, then the timeline of block 0 of the last one
    scripts/v4_trace.py report trace.txt # the phases of the main loop's key tiles per consumer (cycles)

The copy stamps thread 0 of each consumer at the phases of the main loop (the later slots, the narrow last tile's
included): before and after the wait for the tile's data, after taking the turn, after issuing S and P V (wgmma
issue blocks while the tensor cores take earlier products, so this is about as long as the consumer's GEMMs), S
landed, softmax done, P V landed, and P packed. Each stamp is a clock read and a global store (~75 cycles): the
instrumented kernel is ~20% slower, and each phase below holds about one stamp's cost. The build fails loudly
when the code it instruments has changed shape.
"""
import collections
import os
import shutil
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "dist", "trace")
PHASES = {
    (1, 2): "wait for the tile",
    (2, 3): "take the turn",
    (3, 4): "issue S, P V (blocked while the tensor cores run)",
    (4, 5): "S lands",
    (5, 6): "softmax",
    (6, 7): "P V lands",
    (7, 8): "release, rescale, pack P",
    (8, 1): "to the next tile",
}

HARNESS = r"""
#include "kernels/attention_v4.cu"
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>
int main(int argc, char **argv) {
    const int B = argc > 1 ? atoi(argv[1]) : 16, H = 16, N = 577, D = 64;
    const size_t nq = (size_t)B * N * 3 * H * D, no = (size_t)B * N * H * D;
    std::vector<__half> h(nq);
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (auto &x : h) x = __float2half(u(rng));
    __half *qkv, *o;
    if (cudaMalloc(&qkv, nq * 2) != cudaSuccess || cudaMalloc(&o, no * 2) != cudaSuccess) return 1;
    cudaMemcpy(qkv, h.data(), nq * 2, cudaMemcpyHostToDevice);
    fc_attention_params p{};
    p.q = qkv, p.k = qkv + H * D, p.v = qkv + 2 * H * D, p.o = o;
    p.q_batch_stride = p.k_batch_stride = p.v_batch_stride = (long long)N * 3 * H * D;
    p.q_seq_stride = p.k_seq_stride = p.v_seq_stride = 3 * H * D;
    p.q_head_stride = p.k_head_stride = p.v_head_stride = D;
    p.o_batch_stride = (long long)N * H * D, p.o_seq_stride = H * D, p.o_head_stride = D;
    p.batch = B, p.heads_q = p.heads_kv = H, p.seq_q = p.seq_k = N, p.head_dim = D;
    p.softmax_scale = 0.125f;
    for (int i = 0; i < 21; ++i)
        if (fc_attention_v4(&p, FC_F16, 0) != 0) return 1;
    if (cudaDeviceSynchronize() != cudaSuccess) return 1;
    static unsigned long long t[3][8192];
    int n[3];
    cudaMemcpyFromSymbol(t, g_trace, sizeof(t));
    cudaMemcpyFromSymbol(n, g_trace_n, sizeof(n));
    printf("# B%d H%d N%d D%d fp16, block 0: consumer event clock\n", B, H, N, D);
    for (int c = 0; c < 3; ++c)
        for (int i = 0; i < n[c]; ++i) printf("%d %llu %llu\n", c, t[c][i] >> 56, t[c][i] & ((1ull << 56) - 1));
    return 0;
}
"""

# Per file of kernels/: (code, stamped code), each code found exactly once.
STAMPS = {"attention_v4.cu": [
    ('#include "attention_v4/consumer.cuh"\n',
     '__device__ unsigned long long g_trace[3][8192];\n__device__ int g_trace_n[3];\n'
     '#define TR(e) do { if (blockIdx.x == 0 && ctid == 0 && tr_n < 8192) g_trace[consumer][tr_n++] = '
     '((unsigned long long)(e) << 56) | ((unsigned long long)clock64() & ((1ull << 56) - 1)); } while (0)\n'
     '#include "attention_v4/consumer.cuh"\n'),
], "attention_v4/consumer.cuh": [
    ("    int g0 = 0;  // the current item's first ring slot\n",
     "    int g0 = 0;  // the current item's first ring slot\n    int tr_n = 0;\n"),
    ("                i = next_slot(i);\n                wait_full(i);\n",
     "                i = next_slot(i);\n                TR(1);\n                wait_full(i);\n                TR(2);\n"),
    ("                if (turns) turn.take();\n                wgmma_fence();\n"
     "                Consumer::template issue_qk<kN>(scores, q_frag, k_base(i));\n                wgmma_commit();\n"
     "                Consumer::issue_pv(",
     "                if (turns) turn.take();\n                TR(3);\n                wgmma_fence();\n"
     "                Consumer::template issue_qk<kN>(scores, q_frag, k_base(i));\n                wgmma_commit();\n"
     "                Consumer::issue_pv("),
    ("                if (turns) turn.pass();\n                wgmma_wait<1>();\n                fence_operand(scores);\n"
     "                run_softmax();\n",
     "                if (turns) turn.pass();\n                TR(4);\n                wgmma_wait<1>();\n"
     "                fence_operand(scores);\n                TR(5);\n                run_softmax();\n                TR(6);\n"),
    ("                fence_operand(p_frag);\n                release(prev);\n",
     "                fence_operand(p_frag);\n                TR(7);\n                release(prev);\n"),
    ("                Consumer::template rescale_and_pack<kN / 8>(scores, o_acc, row_sums, p_frag, alpha);\n"
     "            };\n",
     "                Consumer::template rescale_and_pack<kN / 8>(scores, o_acc, row_sums, p_frag, alpha);\n"
     "                TR(8);\n            };\n"),
    ("    if (Traits::kPingPong && consumer == 0) turn.take();\n}",
     "    if (Traits::kPingPong && consumer == 0) turn.take();\n"
     "    if (blockIdx.x == 0 && ctid == 0) g_trace_n[consumer] = tr_n;\n}"),
]}


def build():
    # A stamped copy of kernels/ (the consumer's loop is in a header), built through the harness.
    kernels = os.path.join(OUT, "kernels")
    shutil.rmtree(kernels, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "kernels"), kernels)
    for name, stamps in STAMPS.items():
        path = os.path.join(kernels, name)
        src = open(path).read()
        for old, new in stamps:
            if src.count(old) != 1:
                sys.exit(f"v4-trace: the code to stamp changed shape (looked for {old.strip()[:60]!r} in {name})")
            src = src.replace(old, new)
        open(path, "w").write(src)
    open(os.path.join(OUT, "v4_trace.cu"), "w").write(HARNESS)
    cu13 = os.path.join(ROOT, ".toolchain", "py", "nvidia", "cu13")
    nvcc = os.environ.get("NVCC") or (os.path.join(cu13, "bin", "nvcc") if os.path.isdir(cu13) else "nvcc")
    cmd = [nvcc, "-std=c++17", "--expt-relaxed-constexpr", "-gencode", "arch=compute_90a,code=sm_90a",
           "-I" + os.path.join(kernels, "include")]
    if os.path.isdir(cu13):
        cmd += ["-I" + os.path.join(cu13, "include"), "-L" + os.path.join(cu13, "lib")]
    cmd += [os.path.join(OUT, "v4_trace.cu"), "-o", os.path.join(OUT, "v4-trace")]
    subprocess.run(cmd, check=True)
    print(os.path.join(OUT, "v4-trace"))


def report(path):
    events = collections.defaultdict(list)
    for line in open(path):
        if line.startswith("#"):
            print(line.strip())
            continue
        if line.strip():
            c, e, t = map(int, line.split())
            events[c].append((e, t))
    print("| consumer | " + " | ".join(PHASES.values()) + " | tile |")
    print("|---" * (len(PHASES) + 2) + "|")
    for c in sorted(events):
        spans = collections.defaultdict(list)
        seq = events[c]
        for (e, t), (e2, t2) in zip(seq, seq[1:]):
            spans[(e, e2)].append(t2 - t)
        med = [statistics.median(spans[k]) if spans[k] else float("nan") for k in PHASES]
        print(f"| {c} | " + " | ".join(f"{m:.0f}" for m in med) + f" | {sum(med):.0f} |")
    print("(median cycles per key tile of the main loop)")


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "build":
        build()
    elif len(sys.argv) == 3 and sys.argv[1] == "report":
        report(sys.argv[2])
    else:
        sys.exit(__doc__)
