#!/usr/bin/env bash
# Compiles engine/_fastfold.pyx (the fold's compiled fast path and the stream's message
# loop) with Cython and the machine's C compiler, next to the module. Without it the engine
# uses the pure-Python paths (engine/fold.py, engine/stream.py): the same batches, slower.
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$python" -m cython -3 engine/_fastfold.pyx -o "$out/_fastfold.c"
include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
suffix=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
"${CC:-cc}" -O2 -shared -fPIC -I"$include" "$out/_fastfold.c" -o "engine/_fastfold$suffix"
echo "built engine/_fastfold$suffix"
