#!/usr/bin/env bash
# The one way gouache is installed: `make` (the venv CI tests in), `.ci/run` (through make) and
# the Dockerfile all run this script, so CI proves the container's install steps.
#
#   scripts/install.sh [--python PY] [--venv DIR] [--editable] [--extras LIST] [--require-cuda-build]
#
#   --python PY           the interpreter to install into (default: python3)
#   --venv DIR            create DIR with `python3 -m venv` if missing, then install into it
#   --editable            pip install -e (development); the image installs a plain copy
#   --extras LIST         optional dependency groups, e.g. test
#   --require-cuda-build  fail unless the installed torch is a CUDA build (the image's check)
#
# torch==2.14.1 and torchvision==0.29.1 are pinned together in pyproject.toml; on Linux x86-64
# that torch wheel is a CUDA build, which also runs on the CPU.
set -euo pipefail

python=python3
venv=""
editable=""
extras=""
require_cuda=0
while [ $# -gt 0 ]; do
  case "$1" in
    --python) python="$2"; shift 2 ;;
    --venv) venv="$2"; shift 2 ;;
    --editable) editable="-e"; shift ;;
    --extras) extras="$2"; shift 2 ;;
    --require-cuda-build) require_cuda=1; shift ;;
    *) echo "install.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "$venv" ]; then
  test -x "$venv/bin/python" || python3 -m venv "$venv"
  python="$(cd "$venv" && pwd)/bin/python"  # absolute: the check below runs from /
fi

target="$root"
if [ -n "$extras" ]; then
  target="$root[$extras]"
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1
"$python" -m pip install -q --upgrade pip
# shellcheck disable=SC2086 # $editable is empty or -e
"$python" -m pip install -q $editable "$target"

# The install is only done when the installed package imports and its CLI answers (run from /
# so the source tree beside this script is not what gets imported).
cd /
"$python" -m gouache --version
if [ "$require_cuda" = 1 ]; then
  "$python" -c 'import sys, torch; c = torch.version.cuda; print(f"torch {torch.__version__}, CUDA build {c}"); sys.exit(0 if c else "torch is a CPU-only build: the image needs the CUDA wheel pinned in pyproject.toml")'
fi
