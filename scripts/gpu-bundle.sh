#!/usr/bin/env bash
# Builds every test and bench executable (release) plus the CLI into dist/gpu/ with a runner, run.sh, that needs
# only the NVIDIA driver and CUDA libraries on the target: copy the work tree and dist/gpu/ to a GPU machine and run
#   dist/gpu/run.sh [tests] [sanitize] [bench] [peers]      (no argument: all four)
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
  cargo "$@" --release --message-format=json-render-diagnostics |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        pkg = m["package_id"].split("#")[-1].split("@")[0].split("/")[-1]
        print(pkg, m["target"]["name"], m["executable"])
' | while read -r pkg name exe; do
      cp "$exe" "$out/bin/$prefix-$pkg-$name"
    done
}

collect test test --workspace --no-run
collect bench bench --workspace --no-run
collect bin build -p flashclip-cli
strip "$out"/bin/*
cp scripts/gpu-run.sh "$out/run.sh"
chmod +x "$out/run.sh"
du -sh "$out"
ls "$out/bin"
