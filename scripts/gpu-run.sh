#!/usr/bin/env bash
# Runner for the GPU bundle (see scripts/gpu-bundle.sh); run from the repository root on a GPU machine:
#   dist/gpu/run.sh [tests] [sanitize] [bench] [peers]
# Writes logs and result tables under $OUT (default ./gpu-out) and prints a short summary last.
set -uo pipefail
bundle=$(cd "$(dirname "$0")" && pwd)
root=$(pwd)
out=${OUT:-$root/gpu-out}
mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PATH=/usr/local/cuda/bin:$PATH
export FLASHCLIP_REQUIRE_GPU=1
phases=${*:-tests sanitize bench peers}
summary=()
failed=0

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
  git -C "$root" rev-parse HEAD 2>/dev/null || cat "$root/.commit" 2>/dev/null || true
} | tee "$out/machine.txt"

for phase in $phases; do
  case $phase in
  tests)
    for t in "$bundle"/bin/test-*; do
      name=$(basename "$t")
      if (cd "$(crate_dir "$name")" && "$t" --test-threads=4) >"$out/$name.log" 2>&1; then r=ok; else r=FAIL; failed=1; fi
      summary+=("$r $name: $(grep -E '^test result' "$out/$name.log" | tail -1)")
    done
    cat "$out"/test-*.log >"$out/tests.log"
    rm -f "$out"/test-*.log
    ;;
  sanitize)
    # Every kernel at small odd shapes (the tests named gpu_small_*), under each compute-sanitizer tool.
    : >"$out/sanitizer.log"
    for tool in memcheck racecheck initcheck synccheck; do
      for t in "$bundle"/bin/test-flashclip-*; do
        name=$(basename "$t")
        "$t" --list 2>/dev/null | grep -q '^gpu_small' || continue
        log=$(cd "$(crate_dir "$name")" && compute-sanitizer --tool "$tool" --error-exitcode 1 "$t" gpu_small --test-threads=1 2>&1)
        rc=$?
        echo "== $tool $name rc=$rc" >>"$out/sanitizer.log"
        echo "$log" | grep -E "ERROR SUMMARY|test result|========= (Invalid|Race|Uninit|Barrier)" | head -20 >>"$out/sanitizer.log"
        [ $rc = 0 ] || failed=1
        summary+=("sanitizer $tool $name: rc=$rc $(echo "$log" | grep 'ERROR SUMMARY' | tail -1)")
      done
    done
    ;;
  bench)
    : >"$out/bench.md"
    for b in "$bundle"/bin/bench-flashclip-*; do
      FLASHCLIP_BENCH_OUT="$out/bench.md" "$b" --bench >>"$out/bench.log" 2>&1 || { failed=1; summary+=("FAIL $(basename "$b")"); }
    done
    ;;
  peers)
    (cd "$root" && PYTHONUNBUFFERED=1 python3 benches/peers/sdpa.py --json "$out/sdpa.json") >"$out/peers.md" 2>&1 ||
      { failed=1; summary+=("FAIL peers/sdpa.py"); }
    ;;
  *)
    echo "unknown phase $phase (tests sanitize bench peers)" >&2
    exit 2
    ;;
  esac
done

echo
printf '%s\n' "${summary[@]}"
[ -s "$out/bench.md" ] && cat "$out/bench.md"
[ -s "$out/peers.md" ] && tail -40 "$out/peers.md"
exit $failed
