#!/usr/bin/env bash
# Regenerate the golden outputs of the bundled pipeline on the bundled samples (tests/golden/bundled/),
# which tests/runtime/test_golden.py compares today's pipeline against. Run it, and commit the result
# in the same commit, whenever the bundled models (manet_edge/assets/models/) or samples change;
# never to make a failing golden test pass after a library upgrade (that is what the test catches).
#
#   scripts/make_golden.sh            # then: git add tests/golden/bundled
set -euo pipefail
cd "$(dirname "$0")/.."
manet-edge compare manet_edge/assets/samples --save-golden tests/golden/bundled --overwrite \
    --a-backend onnxruntime --a-precision fp32 --streams 1 --batch 1 "$@"
python -m pytest -q -p no:cacheprovider tests/runtime/test_golden.py
