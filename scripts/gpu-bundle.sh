#!/usr/bin/env bash
# Builds every test and bench executable (release) plus the CLI into dist/gpu/ with a runner, run.sh, that needs
# only the NVIDIA driver and CUDA libraries on the target, and packs it as dist/gpu.tar.xz: copy the work tree and
# that archive to a GPU machine, unpack it there (tar -C dist -xJf dist/gpu.tar.xz) and run, from the repository root,
#   dist/gpu/run.sh [tests] [bench] [peers] [clip] [parity] [embed] [embedjob] [sanitize] [sass] [profile] [serve]
#   (no argument: all but embedjob, profile and serve)
# run.sh (scripts/gpu-run.sh, which documents its phases and knobs) takes the executables from dist/gpu/bin and the
# rest from the work tree: the Python under scripts/ and the fixtures under crates/flashclip-model/tests/fixtures.
# Binaries are stripped to keep the bundle small. FLASHCLIP_BASELINE=<commit> adds that commit's bench executables
# and CLI (bin/baseline-<commit>-*), which run.sh's bench and clip phases time after the current ones: a change
# against the code before it, in the same run (FLASHCLIP_BASELINE_CLI_ONLY=1: its CLI only, for the clip and
# embedjob phases). FLASHCLIP_BUNDLE_CLI_ONLY=1 builds only the CLI and the load generator (enough for the embed,
# embedjob and serve phases) in a fraction of the time.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

out=dist/gpu
rm -rf "$out"
mkdir -p "$out/bin"

collect() { # $1: prefix, rest: cargo arguments; copies each built executable as bin/<prefix>-<package>-<target>
  local prefix=$1
  shift
  cargo "$@" --message-format=json-render-diagnostics |
    prefix=$prefix python3 -c '
import os
prefix = os.environ["prefix"]
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    # Bench builds also produce the library unit-test harnesses: keep real bench targets only.
    bench = prefix == "bench" or prefix.startswith("baseline-")
    # cargo test also builds the examples, as plain programs: they are no tests (only collect example takes them).
    example = m.get("target", {}).get("kind") == ["example"]
    if example != (prefix == "example"):
        continue
    # The baseline also keeps its CLI (built last, so it replaces any bin test harness of the same name).
    kinds = [["bench"], ["bin"]] if prefix.startswith("baseline-") else [["bench"]]
    if m.get("reason") == "compiler-artifact" and m.get("executable") and (not bench or m["target"]["kind"] in kinds):
        # package ids look like "path+file:///dir#name@version", or "path+file:///dir/name#version"
        url, _, frag = m["package_id"].partition("#")
        pkg = frag.split("@")[0] if "@" in frag else url.rstrip("/").split("/")[-1]
        print(pkg, m["target"]["name"], m["executable"])
' | while read -r pkg name exe; do
      cp "$exe" "$out/bin/$prefix-$pkg-$name"
    done
}

if [ -z "${FLASHCLIP_BUNDLE_CLI_ONLY:-}" ]; then
  collect test test --release --workspace --no-run
  collect bench bench --workspace --no-run # the bench profile is optimized
fi
if [ -n "${FLASHCLIP_BASELINE:-}" ]; then
  base=$(git rev-parse --short "$FLASHCLIP_BASELINE")
  tree=target/baseline-src
  # A checkout of the same commit from an earlier bundle is kept: its unchanged files keep cargo's build cache valid.
  if [ "$(git -C "$tree" rev-parse --short HEAD 2>/dev/null)" != "$base" ]; then
    git worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"
    git worktree add --force --detach "$tree" "$base" >/dev/null
  fi
  ln -sfn "$PWD/.toolchain" "$tree/.toolchain" # build.rs finds nvcc and libclang there
  if [ -z "${FLASHCLIP_BASELINE_CLI_ONLY:-}" ]; then
    CARGO_TARGET_DIR=target/baseline collect "baseline-$base" bench --workspace --no-run --manifest-path "$tree/Cargo.toml"
  fi
  CARGO_TARGET_DIR=target/baseline collect "baseline-$base" build --release -p flashclip-cli --manifest-path "$tree/Cargo.toml"
fi
collect bin build --release -p flashclip-cli
collect example build --release -p flashclip-server --example loadgen # serve's load generator
# The CLI's own tests run the binary from its build path: they belong to CI, not to the bundle.
rm -f "$out"/bin/test-flashclip-cli-*
strip "$out"/bin/*
cp scripts/gpu-run.sh "$out/run.sh"
chmod +x "$out/run.sh"
# One compressed archive travels well (the kernels' machine code compresses several-fold).
tar -C dist -cJf dist/gpu.tar.xz gpu
du -sh "$out" dist/gpu.tar.xz
ls "$out/bin"
