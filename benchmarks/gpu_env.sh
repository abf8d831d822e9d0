# Sourced by benchmarks/gpu_check.sh and benchmarks/gpu_distill.sh: the paths, and a Python that runs
# bertkit on the GPU machine, the packages its image lacks installed from the bundle's wheels
# (benchmarks/gpu_bundle.py).  Exits 3 with the import error when bertkit cannot run there.
BUNDLE=${BUNDLE:-.gpu}
WORK=${WORK:-runs/gpu}
OUT=${OUT:-$WORK/out}
PY=${PYTHON:-python3}
mkdir -p "$WORK" "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BASE_PATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONPATH=$BASE_PATH
ready() { $PY -c "import datasets, evaluate, bertkit.cli" 2> "$WORK/import.err"; }
# whl: datasets 5, which needs pyarrow >= 24; whl-alt: datasets 4.0, for an image with an older pyarrow
for wheels in whl whl-alt; do
  ready && break
  [ -d "$BUNDLE/$wheels" ] || continue
  site=$(cd "$WORK" && pwd)/site-$wheels
  [ -d "$site" ] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" \
    "$BUNDLE/$wheels"/*.whl
  export PYTHONPATH=$site:$BASE_PATH
done
ready || { echo "bertkit cannot run with $PY here:"; tail -3 "$WORK/import.err"; exit 3; }
