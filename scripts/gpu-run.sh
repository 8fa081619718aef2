#!/usr/bin/env bash
# Runner for the GPU bundle (see scripts/gpu-bundle.sh); run from the repository root on a GPU machine:
#   dist/gpu/run.sh [tests] [bench] [peers] [clip] [parity] [embed] [sanitize] [sass] [profile]
# Writes logs and result tables under $OUT (default ./gpu-out) and prints a short summary last.
# FLASHCLIP_BENCH_ONLY / FLASHCLIP_SANITIZE_ONLY (space-separated name prefixes, e.g. "attention model-gpu")
# limit those phases to some targets;
# FLASHCLIP_BENCH_TIMEOUT (seconds, default 400) bounds each bench executable; FLASHCLIP_BENCH_FILTER (a regex on
# the criterion ids, e.g. "v3|v4") runs part of each, the baseline's too (bench-<commit>.md, where the bundle has
# one: FLASHCLIP_BASELINE in scripts/gpu-bundle.sh); FLASHCLIP_CLIP_ATTENTION
# (fastest, v1-v4, materialized) is the ladder's attention for the 16-bit rungs.
set -uo pipefail
bundle=$(cd "$(dirname "$0")" && pwd)
root=$(pwd)
out=${OUT:-$root/gpu-out}
mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PATH=/usr/local/cuda/bin:$PATH
export FLASHCLIP_REQUIRE_GPU=1
phases=${*:-tests bench peers clip parity embed sanitize sass}
# FLASHCLIP_RUN_SECONDS: a budget for the whole run; a phase that would start past it is skipped (and said so), so
# the summary still prints when the machine's time is short.
deadline=$((SECONDS + ${FLASHCLIP_RUN_SECONDS:-86400}))
summary=()
failed=0

only() { # $1: test or bench, $2: space-separated name prefixes (empty: all); prints the matching executables
  local p
  for p in ${2:-""}; do ls "$bundle"/bin/"$1"-flashclip-"$p"* 2>/dev/null; done | sort -u
}

crate_dir() { # test-<package>-<target> runs in its package root, as cargo test would
  case "$1" in
    *-flashclip-model-*) echo "$root/crates/flashclip-model" ;;
    *-flashclip-cli-*) echo "$root/crates/flashclip-cli" ;;
    *) echo "$root" ;;
  esac
}

{
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader
  # A copied work tree may have no git metadata: the builder can leave the commit in .commit.
  cat "$root/.commit" 2>/dev/null || git -C "$root" rev-parse --verify -q HEAD || echo "commit unknown"
} | tee "$out/machine.txt"

for phase in $phases; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    summary+=("skipped $phase: FLASHCLIP_RUN_SECONDS spent")
    continue
  fi
  case $phase in
  tests)
    for t in "$bundle"/bin/test-*; do
      name=$(basename "$t")
      if (cd "$(crate_dir "$name")" && CARGO_MANIFEST_DIR=$(crate_dir "$name") timeout 240 "$t" --test-threads=8) >"$out/$name.log" 2>&1; then r=ok; else r=FAIL; failed=1; fi
      summary+=("$r $name: $(grep -E '^test result' "$out/$name.log" | tail -1)")
    done
    cat "$out"/test-*.log >"$out/tests.log"
    rm -f "$out"/test-*.log
    ;;
  sanitize)
    # Every kernel at small odd shapes (the tests named gpu_small_*), under each compute-sanitizer tool.
    : >"$out/sanitizer.log"
    for tool in memcheck racecheck initcheck synccheck; do
      [ "$SECONDS" -lt "$deadline" ] || { summary+=("sanitizer $tool skipped: out of time"); continue; }
      for t in $(only test "${FLASHCLIP_SANITIZE_ONLY:-}"); do
        name=$(basename "$t")
        "$t" --list 2>/dev/null | grep -q '^gpu_small' || continue
        # racecheck runs the model's graph-replay test in about 110 s on an H100: it gets a longer default.
        limit=${FLASHCLIP_SANITIZE_TIMEOUT:-$([ "$tool" = racecheck ] && echo 240 || echo 90)}
        log=$(cd "$(crate_dir "$name")" && export CARGO_MANIFEST_DIR=$(crate_dir "$name") && timeout "$limit" compute-sanitizer --tool "$tool" --error-exitcode 1 "$t" gpu_small --test-threads=1 2>&1)
        rc=$?
        echo "== $tool $name rc=$rc" >>"$out/sanitizer.log"
        echo "$log" | grep -E "ERROR SUMMARY|test result|^=========     [A-Z]|^========= [A-Z]" | head -24 >>"$out/sanitizer.log"
        [ $rc = 0 ] || failed=1
        summary+=("sanitizer $tool $name: rc=$rc $(echo "$log" | grep 'ERROR SUMMARY' | tail -1)")
      done
    done
    ;;
  bench)
    : >"$out/bench.md"
    for b in $(only bench "${FLASHCLIP_BENCH_ONLY:-}"); do
      FLASHCLIP_BENCH_OUT="$out/bench.md" timeout "${FLASHCLIP_BENCH_TIMEOUT:-400}" "$b" --bench ${FLASHCLIP_BENCH_FILTER:+"$FLASHCLIP_BENCH_FILTER"} >>"$out/bench.log" 2>&1 || { failed=1; summary+=("FAIL $(basename "$b")"); }
    done
    # The baseline commit's executables of the same benches, after the current ones.
    for b in $(only bench "${FLASHCLIP_BENCH_ONLY:-}"); do
      for base in "$bundle"/bin/baseline-*-"${b#"$bundle"/bin/bench-}"; do
        [ -x "$base" ] || continue
        commit=${base#"$bundle"/bin/baseline-}
        commit=${commit%%-*}
        FLASHCLIP_BENCH_OUT="$out/bench-$commit.md" timeout "${FLASHCLIP_BENCH_TIMEOUT:-400}" "$base" --bench ${FLASHCLIP_BENCH_FILTER:+"$FLASHCLIP_BENCH_FILTER"} >>"$out/bench.log" 2>&1 || { failed=1; summary+=("FAIL $(basename "$base")"); }
      done
    done
    ;;
  peers)
    (cd "$root" && PYTHONUNBUFFERED=1 timeout 120 python3 scripts/peer_sdpa.py --json "$out/sdpa.json") >"$out/peers.md" 2>&1 ||
      { failed=1; summary+=("FAIL peer_sdpa.py"); }
    ;;
  clip)
    # The end-to-end ladder (flashclip bench) next to HF CLIPModel at the same shapes, same method.
    for b in ${FLASHCLIP_CLIP_BATCHES:-16 1}; do
      timeout 240 "$bundle/bin/bin-flashclip-cli-flashclip" bench --batch "$b" --markdown "$out/clip-b$b.md" \
        --attention "${FLASHCLIP_CLIP_ATTENTION:-fastest}" \
        >>"$out/clip.log" 2>&1 || { failed=1; summary+=("FAIL flashclip bench --batch $b"); }
    done
    for b in ${FLASHCLIP_CLIP_BATCHES:-16 1}; do
      (cd "$root" && PYTHONUNBUFFERED=1 timeout 200 python3 scripts/peer_clip_hf.py --batch "$b" \
        --variants ${FLASHCLIP_HF_VARIANTS:-fp32-eager fp16-sdpa fp16-sdpa-compile} --json "$out/clip_hf-b$b.json") \
        >>"$out/clip_hf.md" 2>&1 || { failed=1; summary+=("FAIL peer_clip_hf.py --batch $b"); }
    done
    ;;
  parity)
    # Full-size parity against HF transformers: seeded random checkpoints made here, compared in fp16 and bf16.
    dirs=""
    for preset in ${FLASHCLIP_PARITY_PRESETS:-ViT-B-32 ViT-H-14 ViT-L-14-336}; do
      d=$(mktemp -d)/$preset # the test names each comparison after its directory
      mkdir -p "$d"
      if (cd "$root" && timeout 120 python3 scripts/make_hf_fixture.py "$preset" "$d" --half) \
        >>"$out/parity.log" 2>&1; then dirs="$dirs:$d"; else summary+=("FAIL fixture $preset"); failed=1; fi
    done
    t=$(ls "$bundle"/bin/test-flashclip-model-gpu_model)
    (cd "$root/crates/flashclip-model" && FLASHCLIP_PARITY_DIRS="$dirs" timeout 180 "$t" gpu_parity_from_env --nocapture) \
      >>"$out/parity.log" 2>&1 || { failed=1; summary+=("FAIL parity"); }
    summary+=("parity: $(grep -cE 'embeds: min cosine' "$out/parity.log") embedding comparisons logged")
    ;;
  embed)
    # `flashclip embed` and `zero-shot` end to end on a seeded random ViT-B-32 checkpoint (plus one corrupt file,
    # which must be reported and skipped), the embeddings checked against HF transformers fp32 on the same files.
    d=$(mktemp -d)/ViT-B-32
    mkdir -p "$d"
    img=$root/crates/flashclip-model/tests/fixtures/openai/franz-kafka.jpg
    printf 'not an image' >"$d/corrupt.jpg"
    {
      (cd "$root" && timeout 120 python3 scripts/make_hf_fixture.py ViT-B-32 "$d") &&
        timeout 60 "$bundle/bin/bin-flashclip-cli-flashclip" embed --model "$d" --images "$img" "$d/corrupt.jpg" \
          --texts "a photo of a man" "a diagram" "a dog on a beach at sunset" --out "$out/embed.safetensors" &&
        (cd "$root" && timeout 120 python3 scripts/check_embed.py --model "$d" --ours "$out/embed.safetensors" \
          --tokenizer crates/flashclip-model/tests/fixtures/openai/tokenizer.json) &&
        timeout 60 "$bundle/bin/bin-flashclip-cli-flashclip" zero-shot --model "$d" --image "$img" \
          --labels "a photo of a man,a photo of a cat,a diagram"
    } >"$out/embed.log" 2>&1 || { failed=1; summary+=("FAIL embed (see embed.log)"); }
    summary+=("embed: $(grep -E 'min cosine' "$out/embed.log" | tail -1)")
    ;;
  profile)
    # Nsight Compute, full set, on one launch of each attention version named in FLASHCLIP_PROFILE_VERSIONS
    # (default v4) at B16 H16 N577 D64 fp16 (ViT-L/14-336 batch 16), from the attention bench: throughput, pipes,
    # stalls, and per-SASS-instruction stall samples (summarize with scripts/ncu_stalls.py).
    for v in ${FLASHCLIP_PROFILE_VERSIONS:-v4}; do
      timeout 240 ncu --kernel-name "regex:attention_${v}_" --launch-skip 5 --launch-count 1 --set full \
        --import-source no -f -o "$out/ncu-$v" "$bundle/bin/bench-flashclip-attention" --bench \
        "attention_f16/$v/B16 H16 N577 D64" >"$out/ncu-$v.log" 2>&1 || { failed=1; summary+=("FAIL profile $v"); }
      ncu -i "$out/ncu-$v.ncu-rep" --page details >"$out/ncu-$v.txt" 2>&1
      ncu -i "$out/ncu-$v.ncu-rep" --page source --print-source sass --csv >"$out/ncu-$v-sass.csv" 2>&1
      rm -f "$out/ncu-$v.ncu-rep"
      summary+=("profile $v: $(grep -E '^ +Duration' "$out/ncu-$v.txt" | head -1 | tr -s ' ')")
    done
    ;;
  sass)
    # What the compiler made of the kernels: registers/shared memory/spills per kernel, and the instruction mix
    # that matters (tensor-core HMMA/HGMMA, local-memory LDL/STL).
    b=$(ls "$bundle"/bin/test-flashclip-attention)
    cuobjdump -res-usage "$b" >"$out/resource-usage.txt" 2>&1
    cuobjdump -sass "$b" 2>/dev/null | awk '/Function :/{f=$3} /HMMA|HGMMA|LDL|STL/{for(i=1;i<=NF;i++) if($i ~ /^(HMMA|HGMMA|LDL|STL)/){split($i,a,"."); c[f" "a[1]]++}} END{for(k in c) print k, c[k]}' |
      sort >"$out/sass-mix.txt"
    summary+=("sass: $(grep -c . "$out/sass-mix.txt") kernel/instruction rows")
    ;;
  *)
    echo "unknown phase $phase (tests bench peers clip parity embed sanitize sass profile)" >&2
    exit 2
    ;;
  esac
done

echo
printf '%s\n' "${summary[@]}"
[ -s "$out/bench.md" ] && cat "$out/bench.md"
[ -s "$out/peers.md" ] && tail -40 "$out/peers.md"
cat "$out"/clip-b*.md 2>/dev/null
[ -s "$out/clip_hf.md" ] && tail -15 "$out/clip_hf.md"
grep -E 'embeds: min cosine' "$out/parity.log" 2>/dev/null
exit $failed
