#!/usr/bin/env bash
# Whether a refactor of one kernel file changed its machine code: compiles kernels/<file>.cu as build.rs does (one
# arch, default sm_90a) at a git revision and in the working tree (or at a second revision), and compares the SASS
# of every function, and the registers / shared memory / spills of each (cuobjdump -res-usage).
#
#   scripts/sass_diff.sh attention_v4.cu                 # HEAD against the working tree
#   scripts/sass_diff.sh attention_v4.cu main v4-roles   # two revisions
#   SASS_DIFF_FLAGS=-DFLASHCLIP_TUNING scripts/sass_diff.sh attention_v4.cu   # the tuning build's kernels
#
# Needs cuobjdump and nvdisasm on PATH (e.g. pip install nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm, then add their
# nvidia/cu13/bin to PATH). NVCC overrides the compiler (default: the project-local toolchain), SASS_DIFF_ARCH the
# arch. Exit status 0 when every function is identical, 1 otherwise. Names of anonymous namespaces (which hash the
# file's contents) are normalized; addresses and encodings are compared as they are.
set -euo pipefail

file=${1:?usage: scripts/sass_diff.sh <kernel.cu> [base-rev] [head-rev]}
base=${2:-HEAD}
head=${3:-}
root=$(cd "$(dirname "$0")/.." && pwd)
nvcc=${NVCC:-$root/.toolchain/py/nvidia/cu13/bin/nvcc}
arch=${SASS_DIFF_ARCH:-sm_90a}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# kernels/ of a revision (or of the working tree) into $work/<name>.
checkout() {
    local name=$1 rev=$2
    mkdir -p "$work/$name"
    if [ -z "$rev" ]; then
        cp -r "$root/kernels" "$work/$name/"
    else
        git -C "$root" archive "$rev" kernels | tar -x -C "$work/$name"
    fi
}

# The flags of build.rs's cc::Build, one arch.
compile() {
    local name=$1
    (cd "$work/$name" && "$nvcc" -O3 -std=c++17 --expt-relaxed-constexpr -Xptxas=-warn-spills -I kernels/include \
        ${SASS_DIFF_FLAGS:-} "-gencode=arch=compute_${arch#sm_},code=$arch" -cubin -o "$work/$name.cubin" \
        "kernels/$file")
}

# Per-function SASS files and the resource usage, anonymous namespaces renamed.
dump() {
    local name=$1 normalize='s/_GLOBAL__N__[0-9a-f]+_[0-9]+_[A-Za-z0-9_]+_cu_[0-9a-f]{8}/ANON/g'
    mkdir -p "$work/$name.sass"
    cuobjdump -sass "$work/$name.cubin" | sed -E "$normalize" |
        awk -v dir="$work/$name.sass" '/Function :/ { n++; out = sprintf("%s/%04d", dir, n); print $3 > (dir "/names") }
                                       out { print > out }'
    cuobjdump -res-usage "$work/$name.cubin" | sed -E "$normalize" > "$work/$name.res"
}

checkout base "$base"
checkout head "$head"
compile base
compile head
dump base
dump head

status=0
if ! cmp -s "$work/base.sass/names" "$work/head.sass/names"; then
    echo "the functions differ:"
    diff "$work/base.sass/names" "$work/head.sass/names" || true
    exit 1
fi
same=0
total=0
while read -r fn; do
    total=$((total + 1))
    f=$(printf '%04d' "$total")
    if cmp -s "$work/base.sass/$f" "$work/head.sass/$f"; then
        same=$((same + 1))
    else
        status=1
        count() { grep -cE '^\s+/\*[0-9a-f]{4,}\*/' "$1"; }
        echo "DIFF $fn: $(count "$work/base.sass/$f") -> $(count "$work/head.sass/$f") instructions," \
            "$(diff "$work/base.sass/$f" "$work/head.sass/$f" | grep -c '^<') lines differ"
    fi
done < "$work/base.sass/names"
echo "SASS: $same of $total functions identical"
if cmp -s "$work/base.res" "$work/head.res"; then
    echo "res-usage: identical"
else
    echo "res-usage differs:"
    diff "$work/base.res" "$work/head.res" || true
    status=1
fi
exit $status
