#!/usr/bin/env bash
# Installs what building flashclip needs and a fresh machine may lack:
#  - CUDA 13.0's nvcc, NVVM, headers and static cudart from PyPI into .toolchain/ (only when no nvcc is found);
#  - libclang for bindgen (Debian/Ubuntu's libclang-dev when run as root, else PyPI's libclang into .toolchain/).
# Idempotent: a second run finds everything and does nothing. build.rs looks in .toolchain/ on its own.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLCHAIN=.toolchain/py
CUDA_WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88 # pinned with nvcc: a newer NVVM emits PTX that 13.0's ptxas rejects
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-cccl==13.0.85
)

have_nvcc() {
  [ -n "${NVCC:-}" ] && [ -x "$NVCC" ] && return 0
  for home in "${CUDA_HOME:-}" "${CUDA_PATH:-}"; do
    [ -n "$home" ] && [ -x "$home/bin/nvcc" ] && return 0
  done
  command -v nvcc >/dev/null 2>&1 && return 0
  [ -x "$TOOLCHAIN/nvidia/cu13/bin/nvcc" ]
}

pip_install() {
  local py
  py=$(command -v python3 || command -v python || true)
  if [ -z "$py" ]; then
    echo "setup: python3 with pip is needed to install $*" >&2
    exit 1
  fi
  "$py" -m pip install --quiet --disable-pip-version-check --target "$TOOLCHAIN" --upgrade "$@"
}

if ! have_nvcc; then
  echo "setup: installing CUDA 13.0 nvcc from PyPI into $TOOLCHAIN"
  pip_install "${CUDA_WHEELS[@]}"
fi

have_libclang() {
  # bindgen loads libclang.so or libclang-<version>.so (libclang-cpp is another library).
  local dir name
  for dir in "${LIBCLANG_PATH:-/nonexistent}" /usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu "$TOOLCHAIN/clang/native"; do
    for name in 'libclang.so*' 'libclang-[0-9]*.so*'; do
      compgen -G "$dir/$name" >/dev/null && return 0
    done
  done
  return 1
}

if ! have_libclang; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing libclang-dev (for bindgen)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null
  else
    echo "setup: installing libclang from PyPI into $TOOLCHAIN (for bindgen)"
    pip_install libclang==18.1.1
  fi
fi
echo "setup: toolchain ready"
