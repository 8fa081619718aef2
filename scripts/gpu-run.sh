#!/usr/bin/env bash
# Runner for the GPU bundle (scripts/gpu-bundle.sh builds it as dist/gpu/run.sh). From the repository root of a
# copied work tree, on a GPU machine:
#   dist/gpu/run.sh [PHASE...]     default: tests bench peers clip parity embed sanitize sass
# Phases (one function each below):
#   tests     every test executable, FLASHCLIP_REQUIRE_GPU=1 (a skipped GPU test is a failure)
#   bench     every criterion bench (the baseline commit's after them, where the bundle has one)
#   peers     PyTorch SDPA, every backend, at the attention bench's shapes (scripts/peer_sdpa.py)
#   clip      the end-to-end ladder (`flashclip bench`) and HF CLIPModel at the same batches (scripts/peer_clip_hf.py);
#             then CN-CLIP ViT-L/14@336px against HF ChineseCLIPModel the same way (cn_clip.log, cn_clip_hf.md), and
#             SigLIP so400m/14@384 against HF SiglipModel (siglip.log, siglip_hf.md); at batch 1 also each HF
#             model under torch.compile mode="reduce-overhead" (CUDA graphs)
#   parity    full-size parity against HF transformers on seeded random ViT-B-32, ViT-H-14, ViT-L-14-336,
#             CN-CLIP-ViT-L-14-336 (scripts/make_hf_fixture_chinese_clip.py) and siglip-so400m-patch14-384
#             (scripts/make_hf_fixture_siglip.py)
#   embed     `flashclip embed` / `zero-shot` on a random ViT-B-32, checked against HF (scripts/check_embed.py)
#   embedjob  (not by default) `flashclip embed` on FLASHCLIP_PHOTOS generated photos (scripts/make_photo_folder.py) with a random
#             ViT-L-14-336 at batch 128: images/s and peak RSS, RSS again on twice the inputs, and HF fed by a
#             DataLoader on the same folder (scripts/peer_embed_hf.py); table in embedjob.md
#   sanitize  compute-sanitizer memcheck, racecheck, initcheck, synccheck on the gpu_small_* tests
#   sass      registers, shared memory, spills and the HMMA/HGMMA/LDL/STL mix of the attention kernels
#   profile   (not by default) Nsight Compute on v4 at B16 H16 N577 D64 fp16 (summarize: scripts/ncu_stalls.py)
#   serve     (not by default) `flashclip serve --device cuda --max-batch 128` on a seeded random ViT-L-14-336, loaded
#             by the loadgen example at concurrency 1, 16 and 256 with texts and 640x480 JPEGs: serve.md
# Knobs (environment):
#   OUT                     where logs and tables go                         default ./gpu-out
#   FLASHCLIP_RUN_SECONDS   budget for the whole run; a phase that would     default 86400
#                           start past it is skipped and listed
#   FLASHCLIP_TARGETS       name prefixes of the test and bench executables  default all
#                           that tests, bench and sanitize run, e.g. "attention model-gpu"
#   FLASHCLIP_BENCH_FILTER  regex on criterion ids for bench (the baseline's default all
#                           too), e.g. "v3|v4"
#   FLASHCLIP_CLIP_BATCHES  batches of the clip phase                        default "16 1"
#   FLASHCLIP_SANITIZERS    compute-sanitizer tools of the sanitize phase    default all four
#   FLASHCLIP_PHOTOS        photos of the embedjob phase                     default 8192
#   FLASHCLIP_SERVE_ARGS    the serve phase's server flags past --device     default "--max-batch 128"
#                           and --port, e.g. "--max-batch 64 --replicas 2"
#   FLASHCLIP_EMBEDJOB_CASES its runs of flashclip embed, '|'-separated      default all four: "1x|2x|1x
#                           ("1x" or "2x" the photos, then extra flags)      --streams-per-device 1|1x --jpeg-draft"
# Same-run A/B: a bundle built with FLASHCLIP_BASELINE=<commit> carries that commit's bench executables
# and CLI (bin/baseline-<commit>-*); bench and clip run each right after the current one, into bench-<commit>.md
# next to bench.md and clip-b<batch>-<commit>.md; embedjob runs its CLI on 1x the photos after the current one.
# Prints a short summary last; exits 1 if anything failed.
set -uo pipefail
bundle=$(cd "$(dirname "$0")" && pwd)
root=$(pwd)
out=${OUT:-$root/gpu-out}
targets=${FLASHCLIP_TARGETS:-}
filter=${FLASHCLIP_BENCH_FILTER:-}
batches=${FLASHCLIP_CLIP_BATCHES:-16 1}
photos=${FLASHCLIP_PHOTOS:-8192}
sanitizers=${FLASHCLIP_SANITIZERS:-memcheck racecheck initcheck synccheck}
serve_args=${FLASHCLIP_SERVE_ARGS:---max-batch 128}
embed_cases=${FLASHCLIP_EMBEDJOB_CASES:-1x|2x|1x --streams-per-device 1|1x --jpeg-draft}
deadline=$((SECONDS + ${FLASHCLIP_RUN_SECONDS:-86400}))
mkdir -p "$out"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export PATH=/usr/local/cuda/bin:$PATH
export FLASHCLIP_REQUIRE_GPU=1
cli=$bundle/bin/bin-flashclip-cli-flashclip
summary=()
failed=0

note() { summary+=("$*"); }
fail() { failed=1; note "$@"; }

only() { # $1: test or bench; prints the executables whose names start with one of $targets (all when empty)
  local p
  for p in ${targets:-""}; do ls "$bundle"/bin/"$1"-flashclip-"$p"* 2>/dev/null; done | sort -u
}

crate_dir() { # test-<package>-<target> runs in its package root, as cargo test would
  case "$1" in
  *-flashclip-model-*) echo "$root/crates/flashclip-model" ;;
  *-flashclip-cli-*) echo "$root/crates/flashclip-cli" ;;
  *-flashclip-server-*) echo "$root/crates/flashclip-server" ;;
  *) echo "$root" ;;
  esac
}

py() { # $1: timeout (s), rest: a script under scripts/ and its arguments, run from the repository root
  local limit=$1
  shift
  (cd "$root" && PYTHONUNBUFFERED=1 timeout "$limit" python3 "$@")
}

machine() {
  echo "date: $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,memory.total --format=csv,noheader
  # A copied work tree may have no git metadata: the builder can leave the commit in .commit.
  cat "$root/.commit" 2>/dev/null || git -C "$root" rev-parse --verify -q HEAD || echo "commit unknown"
}

phase_tests() {
  local t name dir
  for t in $(only test); do
    name=$(basename "$t")
    dir=$(crate_dir "$name")
    if (cd "$dir" && CARGO_MANIFEST_DIR=$dir timeout 240 "$t" --test-threads=8) >"$out/$name.log" 2>&1; then
      note "ok $name: $(grep -E '^test result' "$out/$name.log" | tail -1)"
    else
      fail "FAIL $name: $(grep -E '^test result' "$out/$name.log" | tail -1)"
    fi
  done
  cat "$out"/test-*.log >"$out/tests.log"
  rm -f "$out"/test-*.log
}

run_bench() { # $1: executable, $2: its table
  FLASHCLIP_BENCH_OUT="$2" timeout 400 "$1" --bench ${filter:+"$filter"} >>"$out/bench.log" 2>&1 ||
    fail "FAIL $(basename "$1")"
}

phase_bench() {
  local b base commit
  : >"$out/bench.md"
  for b in $(only bench); do run_bench "$b" "$out/bench.md"; done
  # The baseline commit's executables of the same benches, after the current ones.
  for b in $(only bench); do
    for base in "$bundle"/bin/baseline-*-"${b#"$bundle"/bin/bench-}"; do
      [ -x "$base" ] || continue
      commit=${base#"$bundle"/bin/baseline-}
      run_bench "$base" "$out/bench-${commit%%-*}.md"
    done
  done
}

phase_peers() {
  py 120 scripts/peer_sdpa.py --json "$out/sdpa.json" >"$out/peers.md" 2>&1 || fail "FAIL peer_sdpa.py"
}

phase_clip() {
  local b base commit
  for b in $batches; do
    timeout 240 "$cli" bench --batch "$b" --markdown "$out/clip-b$b.md" --attention fastest >>"$out/clip.log" 2>&1 ||
      fail "FAIL flashclip bench --batch $b"
    # The baseline commit's CLI, right after the current one (bundles built with FLASHCLIP_BASELINE).
    for base in "$bundle"/bin/baseline-*-flashclip-cli-flashclip; do
      [ -x "$base" ] || continue
      commit=${base#"$bundle"/bin/baseline-}
      timeout 240 "$base" bench --batch "$b" --markdown "$out/clip-b$b-${commit%%-*}.md" --attention fastest \
        >>"$out/clip.log" 2>&1 || fail "FAIL baseline flashclip bench --batch $b"
    done
  done
  for b in $batches; do
    py 200 scripts/peer_clip_hf.py --batch "$b" --variants fp32-eager fp16-sdpa fp16-sdpa-compile \
      --json "$out/clip_hf-b$b.json" >>"$out/clip_hf.md" 2>&1 || fail "FAIL peer_clip_hf.py --batch $b"
  done
  # Chinese-CLIP ViT-L/14@336px (52-token texts): flashclip, then HF ChineseCLIPModel at the same batches.
  for b in $batches; do
    timeout 240 "$cli" bench --preset CN-CLIP-ViT-L-14-336 --batch "$b" --text-len 52 >>"$out/cn_clip.log" 2>&1 ||
      fail "FAIL flashclip bench CN-CLIP --batch $b"
    py 200 scripts/peer_clip_hf.py --family chinese_clip --batch "$b" --variants fp32-eager fp16-sdpa \
      fp16-sdpa-compile --json "$out/cn_clip_hf-b$b.json" >>"$out/cn_clip_hf.md" 2>&1 ||
      fail "FAIL peer_clip_hf.py --family chinese_clip --batch $b"
  done
  # SigLIP so400m/14@384 (64-token texts): flashclip, then HF SiglipModel at the same batches.
  for b in $batches; do
    timeout 240 "$cli" bench --preset siglip-so400m-patch14-384 --batch "$b" --text-len 64 >>"$out/siglip.log" 2>&1 ||
      fail "FAIL flashclip bench siglip-so400m --batch $b"
    py 200 scripts/peer_siglip_hf.py --batch "$b" --variants fp32-eager fp16-sdpa fp16-sdpa-compile \
      --json "$out/siglip_hf-b$b.json" >>"$out/siglip_hf.md" 2>&1 || fail "FAIL peer_siglip_hf.py --batch $b"
  done
  # Batch 1 is bound by launches: HF's strongest there is torch.compile with CUDA graphs (mode="reduce-overhead").
  case " $batches " in *" 1 "*)
    py 300 scripts/peer_clip_hf.py --batch 1 --variants fp16-sdpa-compile --compile-mode reduce-overhead \
      --json "$out/clip_hf-b1-reduce-overhead.json" >>"$out/clip_hf.md" 2>&1 || fail "FAIL peer_clip_hf.py reduce-overhead"
    py 300 scripts/peer_clip_hf.py --family chinese_clip --batch 1 --variants fp16-sdpa-compile \
      --compile-mode reduce-overhead --json "$out/cn_clip_hf-b1-reduce-overhead.json" >>"$out/cn_clip_hf.md" 2>&1 ||
      fail "FAIL peer_clip_hf.py --family chinese_clip reduce-overhead"
    py 300 scripts/peer_siglip_hf.py --batch 1 --variants fp16-sdpa-compile --compile-mode reduce-overhead \
      --json "$out/siglip_hf-b1-reduce-overhead.json" >>"$out/siglip_hf.md" 2>&1 ||
      fail "FAIL peer_siglip_hf.py reduce-overhead"
    ;;
  esac
}

phase_parity() {
  # Seeded random checkpoints made here, compared in fp16 and bf16 against HF fp32.
  local preset d dirs=""
  for preset in ViT-B-32 ViT-H-14 ViT-L-14-336; do
    d=$(mktemp -d)/$preset # the test names each comparison after its directory
    mkdir -p "$d"
    if py 120 scripts/make_hf_fixture.py "$preset" "$d" --half >>"$out/parity.log" 2>&1; then
      dirs="$dirs:$d"
    else
      fail "FAIL fixture $preset"
    fi
  done
  (cd "$root/crates/flashclip-model" &&
    FLASHCLIP_PARITY_DIRS="$dirs" timeout 180 "$bundle/bin/test-flashclip-model-gpu_model" gpu_parity_from_env --nocapture) \
    >>"$out/parity.log" 2>&1 || fail "FAIL parity"
  d=$(mktemp -d)/CN-CLIP-ViT-L-14-336
  mkdir -p "$d"
  if py 120 scripts/make_hf_fixture_chinese_clip.py CN-CLIP-ViT-L-14-336 "$d" --half >>"$out/parity.log" 2>&1; then
    (cd "$root/crates/flashclip-model" &&
      FLASHCLIP_CN_CLIP_PARITY_DIRS="$d" timeout 180 "$bundle/bin/test-flashclip-model-gpu_chinese_clip" \
        gpu_chinese_clip_parity_from_env --nocapture) >>"$out/parity.log" 2>&1 || fail "FAIL Chinese-CLIP parity"
  else
    fail "FAIL fixture CN-CLIP-ViT-L-14-336"
  fi
  # SigLIP so400m/14 at 384 px: head dim 72, and 384 is not a multiple of 14 (the last 6 pixels are dropped).
  d=$(mktemp -d)/siglip-so400m-patch14-384
  mkdir -p "$d"
  if py 300 scripts/make_hf_fixture_siglip.py siglip-so400m-patch14-384 "$d" --half --device cuda \
    >>"$out/parity.log" 2>&1; then
    (cd "$root/crates/flashclip-model" &&
      FLASHCLIP_SIGLIP_PARITY_DIRS="$d" timeout 180 "$bundle/bin/test-flashclip-model-siglip_gpu" \
        gpu_siglip_parity_from_env --nocapture) >>"$out/parity.log" 2>&1 || fail "FAIL SigLIP parity"
  else
    fail "FAIL fixture siglip-so400m-patch14-384"
  fi
  note "parity: $(grep -cE 'embeds: min cosine' "$out/parity.log") embedding comparisons logged"
}

phase_embed() {
  # A seeded random ViT-B-32 and one corrupt file (reported and skipped); embeddings checked against HF fp32. Batches
  # of 2 images, so that each model thread has a batch in flight while it starts the next.
  local d img fixtures=crates/flashclip-model/tests/fixtures/openai
  d=$(mktemp -d)/ViT-B-32
  mkdir -p "$d"
  img=$root/$fixtures/franz-kafka.jpg
  printf 'not an image' >"$d/corrupt.jpg"
  {
    py 120 scripts/make_hf_fixture.py ViT-B-32 "$d" &&
      timeout 60 "$cli" embed --model "$d" \
        --images "$img" "$d/corrupt.jpg" "$img" "$root/$fixtures/franz-kafka.pil-decoded.webp" "$img" \
        --texts "a photo of a man" "a diagram" "a dog on a beach at sunset" --out "$out/embed" --overwrite \
        --out-dtype float32 --batch 2 &&
      py 120 scripts/check_embed.py --model "$d" --ours "$out/embed" --tokenizer "$fixtures/tokenizer.json" &&
      timeout 60 "$cli" zero-shot --model "$d" --image "$img" --labels "a photo of a man,a photo of a cat,a diagram"
  } >"$out/embed.log" 2>&1 || fail "FAIL embed (see embed.log)"
  note "embed: $(grep -E 'min cosine' "$out/embed.log" | tail -1)"
}

peak_rss_kb() { # runs "$@" with stderr to $log; prints the command's peak resident set size in KiB
  if [ -x /usr/bin/time ]; then
    /usr/bin/time -v "$@" 2>>"$log" >/dev/null
    local rc=$?
    sed -n 's/.*Maximum resident set size (kbytes): *//p' "$log" | tail -1
    return $rc
  fi
  "$@" 2>>"$log" >/dev/null &
  local pid=$! peak=0 hwm p
  while kill -0 "$pid" 2>/dev/null; do
    # "$@" may be a wrapper (timeout): its children count too.
    for p in $pid $(pgrep -P "$pid"); do
      hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$p/status" 2>/dev/null)
      [ -n "$hwm" ] && [ "$hwm" -gt "$peak" ] && peak=$hwm
    done
    sleep 0.2
  done
  wait "$pid"
  local rc=$?
  echo "$peak"
  return $rc
}

embed_case() { # $1: the CLI, $2: a label for its rows, $3: a case ("1x" or "2x", then extra flags); in phase_embedjob
  local exe=$1 label=$2 case=$3 n extra list rate rss row stages model_s
  n=${case%% *}
  extra=${case#"$n"}
  list=$d/list-$n.txt
  echo "== flashclip embed$label, $case" >>"$log"
  rm -rf "$d/out"
  if rss=$(peak_rss_kb timeout 1200 "$exe" embed --model "$d/ViT-L-14-336" --images-from "$list" \
    --out "$d/out" --batch 128 --device cuda --quiet $extra); then
    rate=$(sed -n 's/^embedded .*, \([0-9.]*\) images\/s .*/\1/p' "$log" | tail -1)
    stages=$(grep '^time: ' "$log" | tail -1)
    row="| flashclip embed$label$extra, batch 128, $(nproc) decode threads | $(wc -l <"$list") | $rate | $((rss / 1024)) |"
    rows="$rows$row"$'\n'
    model_s=$(echo "$stages" | sed -n 's/.*(1 model threads, \([0-9.]*\) s in model calls).*/\1/p')
    [ -n "$model_s" ] && rows="$rows| its model calls alone (upload, forward, download; from its stage times) | $(wc -l <"$list") | $(awk -v n="$(wc -l <"$list")" -v s="$model_s" 'BEGIN{printf "%.1f", n/s}') | |"$'\n'
    stage_lines="$stage_lines- $case$label: ${stages#time: }"$'\n'
    note "embedjob $case$label: $rate images/s, peak RSS $((rss / 1024)) MiB; $stages"
  else
    fail "FAIL embedjob flashclip$label $case (see embedjob.log)"
  fi
}

phase_embedjob() {
  # The streaming job against HF + DataLoader on the same photos; peak RSS must not grow with the inputs.
  local d case base commit peer rate rows="" stage_lines="" log=$out/embedjob.log
  d=$(mktemp -d)
  mkdir -p "$d/ViT-L-14-336"
  : >"$log"
  if ! { py 900 scripts/make_photo_folder.py "$d/photos" --count "$photos" &&
    py 300 scripts/make_hf_fixture.py ViT-L-14-336 "$d/ViT-L-14-336"; } >>"$log" 2>&1; then
    fail "FAIL embedjob setup (see embedjob.log)"
    return
  fi
  find "$d/photos" -name '*.jpg' | sort >"$d/list-1x.txt"
  cat "$d/list-1x.txt" "$d/list-1x.txt" >"$d/list-2x.txt"
  # The model alone on the same weights: batches of 128 images from host memory through the GPU backend.
  echo "== model only" >>"$log"
  if "$cli" bench --model "$d/ViT-L-14-336" --batch 128 --embedder --warmup 3 --iters 10 >>"$log" 2>&1; then
    rate=$(sed -n 's/^model only: .*, \([0-9.]*\) images\/s$/\1/p' "$log" | tail -1)
    rows="$rows| the model alone: embed_images of 128 images from host memory (flashclip bench --embedder) | | $rate | |"$'\n'
    note "embedjob model only: $rate images/s"
    rate=$(sed -n 's/^model only, one batch in flight: .*: \([0-9.]*\) images\/s$/\1/p' "$log" | tail -1)
    rows="$rows| the model alone, one batch in flight while the next starts (as the server calls it) | | $rate | |"$'\n'
    note "embedjob model only, one batch in flight: $rate images/s"
  else
    fail "FAIL embedjob model only (see embedjob.log)"
  fi
  # The default job on 1x and 2x the inputs (peak RSS must not grow), then single changes on 1x: one model thread
  # (its stage times give its model calls' rate) and JPEG draft decoding; then the baseline commit's CLI on 1x
  # (bundles built with FLASHCLIP_BASELINE).
  local IFS='|'
  for case in $embed_cases; do
    IFS=' '
    embed_case "$cli" "" "$case"
  done
  IFS=' '
  for base in "$bundle"/bin/baseline-*-flashclip-cli-flashclip; do
    [ -x "$base" ] || continue
    commit=${base#"$bundle"/bin/baseline-}
    embed_case "$base" " (baseline ${commit%%-*})" 1x
  done
  echo "== peer" >>"$log"
  if peer=$(py 1200 scripts/peer_embed_hf.py "$d/photos" --batch 128 --workers 15 2>>"$log"); then
    echo "$peer" >>"$log"
    rate=$(echo "$peer" | sed -n 's/^peer_embed_hf images_per_s=//p')
    rows="$rows| HF CLIPModel fp16 SDPA, DataLoader (15 workers, pin_memory), batch 128 | $photos | $rate | |"$'\n'
    note "embedjob peer: $rate images/s"
  else
    fail "FAIL embedjob peer (see embedjob.log)"
  fi
  {
    echo "# Embedding job: random ViT-L/14-336, $photos JPEGs of 500x375..1024x768"
    echo
    echo "$(machine | tr '\n' ' ')"
    echo
    echo "| run | images | images/s | peak RSS (MiB) |"
    echo "|---|---|---|---|"
    printf '%s' "$rows"
    echo
    echo "The 2x row lists the same folder twice (--images-from): its peak RSS should match the 1x rows'."
    echo
    echo "Where the job's threads spent the run (shares of threads x wall time):"
    printf '%s' "$stage_lines"
  } >"$out/embedjob.md"
  rm -rf "$d"
}

phase_sanitize() {
  local tool t name dir limit log rc
  : >"$out/sanitizer.log"
  for tool in $sanitizers; do
    [ "$SECONDS" -lt "$deadline" ] || { note "sanitizer $tool skipped: out of time"; continue; }
    # racecheck runs the model's graph-replay test in about 110 s on an H100.
    limit=$([ "$tool" = racecheck ] && echo 240 || echo 90)
    for t in $(only test); do
      name=$(basename "$t")
      "$t" --list 2>/dev/null | grep -q '^gpu_small' || continue
      dir=$(crate_dir "$name")
      log=$(cd "$dir" && CARGO_MANIFEST_DIR=$dir timeout "$limit" compute-sanitizer --tool "$tool" --error-exitcode 1 \
        "$t" gpu_small --test-threads=1 2>&1)
      rc=$?
      echo "== $tool $name rc=$rc" >>"$out/sanitizer.log"
      echo "$log" | grep -E "ERROR SUMMARY|test result|^=========     [A-Z]|^========= [A-Z]" | head -24 >>"$out/sanitizer.log"
      [ $rc = 0 ] || failed=1
      note "sanitizer $tool $name: rc=$rc $(echo "$log" | grep 'ERROR SUMMARY' | tail -1)"
    done
  done
}

phase_sass() {
  local b=$bundle/bin/test-flashclip-attention
  cuobjdump -res-usage "$b" >"$out/resource-usage.txt" 2>&1
  cuobjdump -sass "$b" 2>/dev/null |
    awk '/Function :/{f=$3} /HMMA|HGMMA|LDL|STL/{for(i=1;i<=NF;i++) if($i ~ /^(HMMA|HGMMA|LDL|STL)/){split($i,a,"."); c[f" "a[1]]++}} END{for(k in c) print k, c[k]}' |
    sort >"$out/sass-mix.txt"
  note "sass: $(grep -c . "$out/sass-mix.txt") kernel/instruction rows"
}

phase_profile() {
  # Full set on one launch: throughput, pipes, stalls, and per-SASS-instruction stall samples.
  local v=v4
  timeout 240 ncu --kernel-name "regex:attention_${v}_" --launch-skip 5 --launch-count 1 --set full \
    --import-source no -f -o "$out/ncu-$v" "$bundle/bin/bench-flashclip-attention" --bench \
    "attention_f16/$v/B16 H16 N577 D64" >"$out/ncu-$v.log" 2>&1 || fail "FAIL profile $v"
  ncu -i "$out/ncu-$v.ncu-rep" --page details >"$out/ncu-$v.txt" 2>&1
  ncu -i "$out/ncu-$v.ncu-rep" --page source --print-source sass --csv >"$out/ncu-$v-sass.csv" 2>&1
  rm -f "$out/ncu-$v.ncu-rep"
  note "profile $v: $(grep -E '^ +Duration' "$out/ncu-$v.txt" | head -1 | tr -s ' ')"
}

cpu_seconds() { # user + system CPU seconds of process $1 so far
  awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0
}

model_seconds() { # the server's total time in the model for kind $2 so far (its /metrics)
  curl -sf "$1/metrics" | awk -v k="flashclip_model_seconds_sum{kind=\"$2\"}" '$1 == k {print $2; f=1} END{if(!f) print 0}'
}

phase_serve() {
  # The server on the GPU, driven over loopback by the bounded load generator; one table row per run.
  local d pid url="" kind c t0 t1 c0 c1 m0 m1 header=--header log=$out/serve.log lg=$bundle/bin/example-flashclip-server-loadgen
  d=$(mktemp -d)/ViT-L-14-336
  mkdir -p "$d"
  : >"$log"
  if ! py 300 scripts/make_hf_fixture.py ViT-L-14-336 "$d" >>"$log" 2>&1; then
    fail "FAIL serve: random ViT-L-14-336 (see serve.log)"
    return
  fi
  "$cli" serve --model "$d" --device cuda --port 0 $serve_args >"$out/serve.stdout" 2>>"$log" &
  pid=$!
  for _ in $(seq 300); do
    kill -0 "$pid" 2>/dev/null || break
    url=$(grep -o 'http://[0-9.:]*' "$out/serve.stdout" | head -1)
    [ -n "$url" ] && curl -sf "$url/health" >/dev/null && break
    url=""
    sleep 1
  done
  if [ -z "$url" ]; then
    fail "FAIL serve: the server never became ready (see serve.log)"
    kill "$pid" 2>/dev/null
    return
  fi
  : >"$out/serve.md"
  : >"$out/serve-load.md"
  for kind in text image; do
    for c in 1 16 256; do
      # Server CPU (cores busy) and the model thread's share of the wall time, per run: which side limits.
      t0=$(date +%s.%N) c0=$(cpu_seconds "$pid") m0=$(model_seconds "$url" "$kind")
      timeout 120 "$lg" --url "$url" --kind "$kind" --concurrency "$c" --requests $((c < 32 ? 256 : 8 * c)) \
        --max-seconds 60 $header >>"$out/serve.md" 2>>"$log" || fail "FAIL serve: loadgen $kind concurrency $c"
      header=
      t1=$(date +%s.%N) c1=$(cpu_seconds "$pid") m1=$(model_seconds "$url" "$kind")
      awk -v k="$kind" -v c="$c" -v t="$t1 - $t0" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v m0="$m0" -v m1="$m1" \
        'BEGIN{w=t1-t0; printf "| %s | %d | %.2f s | %.1f cores | %.0f%% |\n", k, c, w, (c1-c0)/w, 100*(m1-m0)/w}' \
        >>"$out/serve-load.md"
    done
  done
  {
    echo
    echo "| kind | concurrency | wall | server CPU | model thread busy |"
    echo "|---|---|---|---|---|"
    cat "$out/serve-load.md"
  } >>"$out/serve.md"
  curl -sf "$url/metrics" >"$out/serve-metrics.txt" 2>>"$log"
  kill -TERM "$pid"
  wait "$pid" || fail "FAIL serve: the server did not stop cleanly (see serve.log)"
  note "serve: $(grep -c '^| [TI]' "$out/serve.md") load rows in serve.md"
}

report() {
  echo
  printf '%s\n' "${summary[@]}"
  [ -s "$out/bench.md" ] && cat "$out/bench.md"
  [ -s "$out/peers.md" ] && tail -40 "$out/peers.md"
  cat "$out"/clip-b*.md 2>/dev/null
  [ -s "$out/clip_hf.md" ] && tail -15 "$out/clip_hf.md"
  grep -E 'embeds: min cosine' "$out/parity.log" 2>/dev/null
  cat "$out/serve.md" 2>/dev/null
}

machine | tee "$out/machine.txt"
for phase in ${*:-tests bench peers clip parity embed sanitize sass}; do
  if ! declare -F "phase_$phase" >/dev/null; then
    echo "unknown phase $phase (tests bench peers clip parity embed embedjob sanitize sass profile serve)" >&2
    exit 2
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    note "skipped $phase: FLASHCLIP_RUN_SECONDS spent"
    continue
  fi
  "phase_$phase"
done
report
exit $failed
