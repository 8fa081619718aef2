#!/usr/bin/env bash
# Builds every test and bench executable (release) plus the CLI into dist/gpu/ with a runner, run.sh, that needs
# only the NVIDIA driver and CUDA libraries on the target, and packs it as dist/gpu.tar.xz: copy the work tree and
# that archive to a GPU machine, unpack it there (tar -C dist -xJf dist/gpu.tar.xz) and run, from the repository root,
#   dist/gpu/run.sh [tests] [bench] [peers] [clip] [parity] [embed] [sanitize] [sass] [profile]  (no argument: all but profile)
# Binaries are stripped to keep the bundle small.
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
    if m.get("reason") == "compiler-artifact" and m.get("executable") and (prefix != "bench" or m["target"]["kind"] == ["bench"]):
        # package ids look like "path+file:///dir#name@version", or "path+file:///dir/name#version"
        url, _, frag = m["package_id"].partition("#")
        pkg = frag.split("@")[0] if "@" in frag else url.rstrip("/").split("/")[-1]
        print(pkg, m["target"]["name"], m["executable"])
' | while read -r pkg name exe; do
      cp "$exe" "$out/bin/$prefix-$pkg-$name"
    done
}

collect test test --release --workspace --no-run
collect bench bench --workspace --no-run # the bench profile is optimized
collect bin build --release -p flashclip-cli
# The CLI's own tests run the binary from its build path: they belong to CI, not to the bundle.
rm -f "$out"/bin/test-flashclip-cli-*
strip "$out"/bin/*
cp scripts/gpu-run.sh "$out/run.sh"
chmod +x "$out/run.sh"
# One compressed archive travels well (the kernels' machine code compresses several-fold).
tar -C dist -cJf dist/gpu.tar.xz gpu
du -sh "$out" dist/gpu.tar.xz
ls "$out/bin"
