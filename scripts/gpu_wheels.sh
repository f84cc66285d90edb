#!/usr/bin/env bash
# Download the Python wheels the GPU image lacks, for CPython 3.12 on x86-64 Linux, into an
# ignored folder (default .gpu_wheels/) that travels with the working tree to a machine with
# no registry access. The image has torch 2.11, transformers 5.17, numpy, tqdm, safetensors,
# PyYAML and packaging; twist's training, tokenization and the GPU suite also need these.
#
#   scripts/gpu_wheels.sh                 # -> .gpu_wheels/*.whl, prints the total size
#   scripts/gpu_wheels.sh /some/dir       # elsewhere
#
# On the GPU machine (see docs/performance.md for the one-line suite command):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu_wheels/*.whl
#   export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.gpu_wheels}
py=${PYTHON:-python3}
mkdir -p "$dest"

# versions as installed by `make install` here, so both machines run the same code
binary=(
  hydra-core==1.3.8        # twist's CLIs (the suite itself does not import it)
  omegaconf==2.3.1         # trainer configs
  faiss-cpu==1.15.1        # k-means fitting in twist-tokenize
  soundfile==0.14.0        # audio decoding (bundles libsndfile)
  soxr==1.1.0              # resampling
  cffi==2.0.0              # needed by soundfile
  pycparser==3.0           # needed by cffi
)
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --abi cp312 --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
  -d "$dest" "${binary[@]}"
# antlr4-python3-runtime 4.9.x (omegaconf's parser) is published as a source archive only: build
# its pure-Python wheel here
"$py" -m pip wheel -q --no-deps -w "$dest" antlr4-python3-runtime==4.9.3

ls -1 "$dest"
total=$(du -cb "$dest"/*.whl | tail -1 | cut -f1)
echo "total: $((total / 1024 / 1024)) MiB ($total bytes) in $dest"
if [ "$total" -gt $((60 * 1024 * 1024)) ]; then
  echo "error: more than 60 MiB; the working tree that travels is limited to 64 MiB" >&2
  exit 1
fi
