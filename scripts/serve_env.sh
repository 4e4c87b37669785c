#!/usr/bin/env bash
# A virtual environment for `manet-edge serve` and tests/serve, beside the main one.
#
# Why a separate one: tritonclient[grpc] needs protobuf < 7 (the main environment may have 7), and
# nvidia-pytriton (which ships the tritonserver binary and its Python backend) declares numpy < 2.
# This venv sees the main environment's packages (numpy 2, onnxruntime, ...), adds tritonclient
# and installs nvidia-pytriton WITHOUT its dependencies: manet-edge only runs the wheel's
# tritonserver binary and Python backend stub and never imports PyTriton's Python code, so numpy
# stays at the main environment's version.
#
#   scripts/serve_env.sh [VENV]            # default: .venv-serve
#   .venv-serve/bin/python -m pytest tests/serve
#   .venv-serve/bin/python -m cli serve    # from the repository root
set -euo pipefail
VENV=${1:-.venv-serve}
python -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install "tritonclient[http,grpc]>=2.40" "highdicom>=0.22" "pynetdicom>=2.0"
"$VENV/bin/pip" install --no-deps "nvidia-pytriton==0.7.0"
"$VENV/bin/python" -c "import numpy; print('numpy', numpy.__version__)"
"$VENV/bin/python" -c "from manet_edge.serve.tritonserver import find_tritonserver; print(find_tritonserver())"
