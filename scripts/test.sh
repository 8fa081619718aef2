#!/usr/bin/env bash
# The test command: sets up the toolchain, then runs every test of the workspace.
# Without a GPU, GPU tests skip and one line says how many and why; FLASHCLIP_REQUIRE_GPU=1 makes that a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

skips=$(mktemp)
trap 'rm -f "$skips"' EXIT
status=0
FLASHCLIP_SKIP_LOG="$skips" cargo test --workspace "$@" || status=$?

if [ -s "$skips" ]; then
  reason=$(cut -f2 "$skips" | sort | uniq -c | sort -rn | head -1 | sed 's/^ *[0-9]* //')
  echo "flashclip: $(wc -l <"$skips") GPU tests skipped: $reason (set FLASHCLIP_REQUIRE_GPU=1 to fail instead)"
fi
exit "$status"
