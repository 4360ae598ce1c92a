#!/usr/bin/env bash
# Builds the environment of the original S2CNN (JanEGerken/sem_seg_s2cnn, its pure-PyTorch path) for
# bench/s2cnn_original/compare.py, in a venv outside the repository. Calls pip (PyPI), so run it by hand;
# nothing in the library or the tests downloads anything.
#
#   bash bench/s2cnn_original/make_venv.sh /work/peer_venv
#
# lie_learn has no wheel for recent Pythons; its source build needs cython and numpy present first, hence
# --no-build-isolation as the fallback.
set -euo pipefail
venv=${1:?usage: make_venv.sh VENV_DIR}
python3 -m venv "$venv"
"$venv/bin/pip" install --upgrade pip
"$venv/bin/pip" install torch==2.13.0 'numpy<2' scipy psutil
if ! "$venv/bin/pip" install lie_learn; then
    echo "lie_learn: the isolated build failed; building against the venv's cython and numpy" >&2
    "$venv/bin/pip" install cython wheel setuptools
    "$venv/bin/pip" install --no-build-isolation lie_learn
fi
"$venv/bin/python" -c "import torch, numpy, lie_learn; print('torch', torch.__version__, 'numpy', numpy.__version__)"
