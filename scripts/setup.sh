#!/usr/bin/env bash
# Installs everything the demo and the tests need. Safe to run again (no-op when installed).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test]"
# The ImageNet path's resize op (Pillow's bilinear, bit for bit) is compiled once with g++;
# building it here keeps the ~10 s out of the first run. Without a compiler only ImageNet runs
# are refused (with a message naming the compiler).
python -m widesparse_jax.data.pil_resize >/dev/null 2>&1 \
  || echo "warning: could not build the ImageNet resize op (needs g++); ImageNet runs will be refused" >&2
# Real Fashion-MNIST for offline runs (Debian package with the IDX files).
if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1)) \
      || echo "warning: could not install dataset-fashion-mnist; offline Fashion-MNIST tests will be skipped" >&2
  else
    echo "note: install the Debian package dataset-fashion-mnist for offline real-data runs" >&2
  fi
fi
