#!/usr/bin/env bash
# bertkit on one GPU: does every training path run there, how fast, in how much memory.
#
#   .venv/bin/python benchmarks/gpu_bundle.py --out .gpu       # on a machine with ../shared/data
#   bash benchmarks/gpu_check.sh                                # on the GPU machine, from the repo root
#
# Stages (each in its own process, its log under $WORK/logs, a failure printed and the next stage run):
#   pretrain-mlm tiny and small (BERT-tiny 2x128, BERT-small 4x512; 128-token blocks of English Wikipedia,
#   a WordPiece vocabulary trained by `bertkit tokenize`), each in fp32 and bf16, STEPS steps of 128 blocks;
#   finetune-cls MiniLM-L6 on all of SST-2 (TEACHER_EPOCHS epochs, the recipe's settings otherwise; the
#   precision bertkit picks there: bf16) and predict on SST-2 dev repeated 10x; finetune-ner MiniLM on
#   CoNLL-2003 (the recipe's settings, NER_EPOCHS epochs) with its test set; finetune-qa MiniLM on the SQuAD
#   slice and predict on the dev slice.
# Printed at the end: tokens/s or examples/s of the training steps, rows/s of predict, peak GPU memory
# (torch's allocator; nvidia-smi's sampled peak, context included, beside it) and the dev metric.
# The fine-tuned models stay under $WORK for benchmarks/gpu_distill.sh.
#
# Time on an H200 (firecracker VM, 16 vCPUs; its first run, with TEACHER_EPOCHS=2 and STEPS=200): start and
# transfer of the bundle ~30 s, data 10 s, tokenize 17 s, each pretrain run 32-38 s (mostly process start and
# evaluation), finetune-sst2 193 s (2 epochs), predict 23 s; finetune-ner was stopped by a 480 s limit.
# Training steps there cost ~35 ms whatever the model's size (host-bound), so the defaults below (1 epoch
# each, 100 pretraining steps) keep the whole check near 6 minutes.  A second run
# (PARTS="ner distill qa compile", COMPILE_STEPS=200): finetune-conll 47 s, distill-conll 69 s,
# finetune-squad 32 s, predict-squad 19 s, sst2-no-compile 45 s, sst2-compile 97 s; 359 s in all.
set -u
source "$(dirname "$0")/gpu_env.sh"
STEPS=${STEPS:-100}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-1}
NER_EPOCHS=${NER_EPOCHS:-1}
QA_EPOCHS=${QA_EPOCHS:-2}
PARTS=${PARTS:-pretrain cls ner qa}  # which parts run; also: compile (finetune-cls --max-steps COMPILE_STEPS with
# and without --compile), distill (a 3-layer student of the CoNLL-2003 tagger, 1 epoch; needs ner first)
COMPILE_STEPS=${COMPILE_STEPS:-300}
STAGE_LIMIT=${STAGE_LIMIT:-240}  # seconds; a stage still running then is stopped (rc 124) and the next one run
FT_ARGS=${FT_ARGS:-}  # extra flags for every fine-tune (a CPU smoke run of this script: FT_ARGS="--max-steps 3")
LOGS=$WORK/logs  # one log per stage; packed into $OUT/gpu_check_logs.tar.gz at the end
mkdir -p "$WORK/data" "$LOGS"
BK="$PY -m bertkit"
SMI=$(command -v nvidia-smi || true)

part() { [[ " $PARTS " == *" $1 "* ]]; }  # part NAME: whether PARTS names it

# stage NAME CMD...: runs CMD with its output in $LOGS/NAME.log, sampling the GPU's memory meanwhile
stage() {
  local name=$1; shift
  local t0=$SECONDS smi_pid=""
  if [ -n "$SMI" ]; then
    "$SMI" --query-gpu=memory.used --format=csv,noheader,nounits -lms 250 > "$WORK/smi.$name" 2>/dev/null &
    smi_pid=$!
  fi
  timeout "$STAGE_LIMIT" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  [ -n "$smi_pid" ] && kill "$smi_pid" 2>/dev/null
  local peak=""
  [ -s "$WORK/smi.$name" ] && peak=$(sort -n "$WORK/smi.$name" | tail -1)
  echo "$name ${peak:-0}" >> "$WORK/smi_peaks"
  if [ $rc -eq 0 ]; then echo "[ok]   $name ($((SECONDS - t0)) s)"
  else echo "[FAIL] $name rc=$rc ($((SECONDS - t0)) s):"; tail -5 "$LOGS/$name.log" | sed 's/^/         /'; fi
}

echo "== machine"
[ -n "$SMI" ] && "$SMI" --query-gpu=name,memory.total,driver_version --format=csv,noheader
$BK env 2>&1 | grep -E "^(bertkit|python|torch|transformers|datasets|accelerate|cuda)" | tee "$LOGS/env.txt"
: > "$WORK/smi_peaks"

echo "== data"
$PY - "$BUNDLE" "$WORK" <<'EOF'
import gzip, shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
bundle, work = Path(sys.argv[1]), Path(sys.argv[2])
data = work / "data"
for f in bundle.rglob("*.gz"):
    dst = data / f.relative_to(bundle).with_suffix("")
    dst.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(f, "rb") as src, open(dst, "wb") as out:
        shutil.copyfileobj(src, out)
model = work / "minilm"
model.mkdir(exist_ok=True)
for f in (bundle / "minilm").iterdir():
    if f.suffix != ".safetensors":
        shutil.copy(f, model / f.name)
weights = load_file(str(bundle / "minilm" / "model.fp16.safetensors"))
save_file({k: v.float() for k, v in weights.items()}, str(model / "model.safetensors"))
rows = (data / "sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()
(data / "sst2" / "dev10.tsv").write_text("\n".join(rows[:1] + rows[1:] * 10) + "\n", encoding="utf-8")
print("data and MiniLM (fp32) ready")
EOF
D=$WORK/data
M=$WORK/minilm

if part pretrain; then
echo "== pretrain-mlm"
stage tokenize $BK tokenize "$D/enwiki.txt" --output "$WORK/enwiki-tok" --train-tokenizer --max-seq-length 128 \
  --overwrite --quiet
for preset in tiny small; do
  for prec in no bf16; do
    stage "pretrain-$preset-$prec" $BK pretrain-mlm --data "$WORK/enwiki-tok" --preset "$preset" --precision "$prec" \
      --max-steps "$STEPS" --batch-size 128 --lr 1e-3 --logging-steps 50 --save-steps 100000 \
      --output "$WORK/pretrain-$preset-$prec" --overwrite --quiet
  done
done
fi

if part cls; then
echo "== finetune-cls + predict (MiniLM, SST-2)"
stage finetune-sst2 $BK finetune-cls --model "$M" --train "$D/sst2/train.tsv" --validation "$D/sst2/dev.tsv" \
  --text-column sentence --label-column label --max-seq-length 64 --batch-size 32 --lr 5e-5 --epochs "$TEACHER_EPOCHS" \
  --output "$WORK/sst2-teacher" --overwrite --quiet $FT_ARGS
stage predict-sst2 $BK predict --model "$WORK/sst2-teacher" --input "$D/sst2/dev10.tsv" --text-column sentence \
  --output "$WORK/sst2-pred.jsonl"
fi

if part ner; then
echo "== finetune-ner (MiniLM, CoNLL-2003)"
stage finetune-conll $BK finetune-ner --model "$M" --train "$D/conll/train.txt" --validation "$D/conll/dev.txt" \
  --test "$D/conll/test.txt" --max-seq-length 128 --stride 32 --epochs "$NER_EPOCHS" --batch-size 32 --lr 1e-4 \
  --warmup-ratio 0.1 --output "$WORK/conll-teacher" --overwrite --quiet $FT_ARGS
fi

if part distill; then
echo "== distill (CoNLL-2003 tagger -> 3 layers, 1 epoch)"
stage distill-conll $BK distill --teacher "$WORK/conll-teacher" --train "$D/conll/train.txt" \
  --validation "$D/conll/dev.txt" --test "$D/conll/test.txt" --student-layers 3 --alpha 0.5 --temperature 2 \
  --epochs 1 --batch-size 32 --lr 1e-4 --output "$WORK/conll-student" --overwrite --quiet $FT_ARGS
fi

if part qa; then
echo "== finetune-qa + predict (MiniLM, SQuAD slice)"
stage finetune-squad $BK finetune-qa --model "$M" --train "$D/squad/train.json" --validation "$D/squad/dev.json" \
  --epochs "$QA_EPOCHS" --batch-size 32 --lr 1e-4 --output "$WORK/squad" --overwrite --quiet $FT_ARGS
stage predict-squad $BK predict --model "$WORK/squad" --input "$D/squad/dev.json" --output "$WORK/squad-pred.jsonl"
fi

if part compile; then
echo "== finetune-cls with and without --compile (MiniLM, SST-2, $COMPILE_STEPS steps)"
for c in no-compile compile; do
  stage "sst2-$c" $BK finetune-cls --model "$M" --train "$D/sst2/train.tsv" --validation "$D/sst2/dev.tsv" \
    --text-column sentence --label-column label --max-seq-length 64 --batch-size 32 --lr 5e-5 \
    --max-steps "$COMPILE_STEPS" --"$c" --output "$WORK/sst2-$c" --overwrite --quiet
done
fi

echo "== summary"
$PY - "$WORK" "$LOGS" <<'EOF' | tee "$OUT/gpu_check_summary.txt"
import json, re, sys
from pathlib import Path
work, logs = Path(sys.argv[1]), Path(sys.argv[2])
peaks = dict(line.split() for line in (work / "smi_peaks").read_text().splitlines() if line.strip())
def metrics(d):
    f = work / d / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None
def score(m):
    keys = [k for k in m if re.fullmatch(r"(eval|test)_(accuracy|f1|exact_match)", k)]
    return ", ".join(f"{k} {m[k]:.4f}" for k in sorted(keys) if isinstance(m[k], (int, float)))
print(f"{'stage':<22} {'rate':>22} {'train s':>8} {'torch peak GiB':>15} {'smi peak GiB':>13}  metric")
rows = [(f"pretrain-{p}-{q}", f"pretrain-{p}-{q}") for p in ("tiny", "small") for q in ("no", "bf16")]
rows += [("finetune-sst2", "sst2-teacher"), ("sst2-no-compile", "sst2-no-compile"), ("sst2-compile", "sst2-compile"),
         ("finetune-conll", "conll-teacher"), ("distill-conll", "conll-student"), ("finetune-squad", "squad")]
for stage, d in rows:
    m = metrics(d)
    smi = f"{int(peaks.get(stage, 0)) / 1024:.1f}"
    if m is None:
        if stage in peaks:  # run, but it wrote no metrics
            print(f"{stage:<22} {'(no metrics.json)':>22}")
        continue
    unit = next((k for k in m if k.endswith("_per_second") and not k.startswith(("eval", "test"))), None)
    rate = f"{m[unit]:,.0f} {unit.replace('_per_second', '/s')}" if unit else "-"
    print(f"{stage:<22} {rate:>22} {m.get('train_seconds', 0):>8.1f} {m.get('gpu_peak_memory_gib', 0):>15.2f} "
          f"{smi:>13}  {score(m)}")
for stage in ("predict-sst2", "predict-squad"):
    if stage not in peaks:  # not run (PARTS)
        continue
    log = logs / f"{stage}.log"
    found = re.search(r"predict: (.*?) in ([\d.]+)s \(([\d,.]+) (\w+)/s\)", log.read_text()) if log.is_file() else None
    smi = f"{int(peaks.get(stage, 0)) / 1024:.1f}"
    print(f"{stage:<22} {(found.group(3) + ' ' + found.group(4) + '/s') if found else '(failed)':>22} "
          f"{'':>8} {'':>15} {smi:>13}  {found.group(1) if found else ''}")
EOF
tar -czf "$OUT/gpu_check_logs.tar.gz" -C "$WORK" logs
