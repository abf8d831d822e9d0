#!/usr/bin/env bash
# bertkit distill on one GPU: 3-layer students of the MiniLM teachers benchmarks/gpu_check.sh fine-tuned
# (SST-2, CoNLL-2003), each distilled and each trained on the hard labels alone with the same steps, two
# seeds, every arm a process of its own, all at once (small students leave a GPU mostly idle).
#
#   bash benchmarks/gpu_check.sh && bash benchmarks/gpu_distill.sh       # on the GPU machine
#
# SST-2 arms (lr 1e-4, batch 32, EPOCHS epochs over the 67,349 labelled rows):
#   base       --alpha 0: no teacher (the baseline)
#   kd         --alpha 0.5 --temperature 2
#   soft       --alpha 1 --temperature 1: the teacher's distribution alone
#   kd-unl     --alpha 0.5 --temperature 2 --unlabeled GoEmotions' 43,410 training texts (soft targets only),
#              EPOCHS epochs over the 110,759 rows
#   base-long  --alpha 0 for as many steps as kd-unl (--max-steps), the baseline kd-unl is held against
# CoNLL-2003 arms (EPOCHS epochs): base (--alpha 0) and kd (--alpha 0.5 --temperature 2), dev and test F1.
# Arms still running after LIMIT seconds are stopped and reported unfinished.
#
# Measured on an H200: ten SST-2 arms at once (2 seeds, 2 epochs; CoNLL's teacher missing) had not finished
# after 285 s.  A MiniLM step at batch 32 costs ~35 ms there (host-bound), so one 2-epoch arm alone needs
# ~150 s plus its teacher pass, and ten processes share one GPU by time slicing: give the script a call
# of its own, or fewer arms (SEEDS, EPOCHS).
set -u
SEEDS=${SEEDS:-0 1}
EPOCHS=${EPOCHS:-1}
LIMIT=${LIMIT:-300}
ARGS=${ARGS:-}  # extra flags for every arm (a CPU smoke run of this script: ARGS="--max-steps 3")
source "$(dirname "$0")/gpu_env.sh"
export OMP_NUM_THREADS=1
D=$WORK/data
R=$WORK/distill
LOGS=$R/logs
mkdir -p "$LOGS" "$OUT"

arm() {  # arm NAME FLAGS...: one distill run in the background
  local name=$1; shift
  timeout "$LIMIT" $PY -m bertkit distill "$@" --student-layers 3 --batch-size 32 --output "$R/$name" --overwrite \
    --quiet $ARGS > "$LOGS/$name.log" 2>&1 &
}

SST2=(--teacher "$WORK/sst2-teacher" --train "$D/sst2/train.tsv" --validation "$D/sst2/dev.tsv"
      --text-column sentence --label-column label --lr 1e-4)
CONLL=(--teacher "$WORK/conll-teacher" --train "$D/conll/train.txt" --validation "$D/conll/dev.txt"
       --test "$D/conll/test.txt" --lr 1e-4)
ROWS=$(( $(wc -l < "$D/sst2/train.tsv") - 1 + $(wc -l < "$D/goemotions.tsv") - 1 ))
LONG_STEPS=$(( (ROWS + 31) / 32 * EPOCHS ))
echo "arms: seeds $SEEDS, $EPOCHS epochs; kd-unl and base-long: $LONG_STEPS steps ($ROWS rows); limit $LIMIT s"
t0=$SECONDS
for s in $SEEDS; do
  arm "sst2-base-s$s" "${SST2[@]}" --seed "$s" --epochs "$EPOCHS" --alpha 0
  arm "sst2-kd-s$s" "${SST2[@]}" --seed "$s" --epochs "$EPOCHS" --alpha 0.5 --temperature 2
  arm "sst2-soft-s$s" "${SST2[@]}" --seed "$s" --epochs "$EPOCHS" --alpha 1 --temperature 1
  arm "sst2-kd-unl-s$s" "${SST2[@]}" --seed "$s" --max-steps "$LONG_STEPS" --alpha 0.5 --temperature 2 \
    --unlabeled "$D/goemotions.tsv"
  arm "sst2-base-long-s$s" "${SST2[@]}" --seed "$s" --max-steps "$LONG_STEPS" --alpha 0
  arm "conll-base-s$s" "${CONLL[@]}" --seed "$s" --epochs "$EPOCHS" --alpha 0
  arm "conll-kd-s$s" "${CONLL[@]}" --seed "$s" --epochs "$EPOCHS" --alpha 0.5 --temperature 2
done
wait
echo "all arms done in $((SECONDS - t0)) s"

$PY - "$WORK" "$R" "$OUT" <<'EOF' | tee "$OUT/gpu_distill_summary.txt"
import json, statistics, sys
from pathlib import Path
work, runs, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
def load(d):
    f = d / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None
teachers = {k: load(work / f"{k}-teacher") for k in ("sst2", "conll")}
with open(out / "gpu_distill_metrics.jsonl", "w") as fh:
    for d in sorted(p for p in runs.iterdir() if p.is_dir() and p.name != "logs"):
        fh.write(json.dumps({"arm": d.name, "metrics": load(d)}) + "\n")
    for k, m in teachers.items():
        fh.write(json.dumps({"arm": f"{k}-teacher", "metrics": m}) + "\n")
METRIC = {"sst2": "accuracy", "conll": "f1"}
for task, arms in (("sst2", ("base", "kd", "soft", "kd-unl", "base-long")), ("conll", ("base", "kd"))):
    def pick(m, split):
        key = f"{split}_{METRIC[task]}"
        return 100 * m[key] if m and key in m else None
    t = teachers[task]
    print(f"\n{task}: teacher dev {pick(t, 'eval') or 0:.2f}, test {pick(t, 'test') or 0:.2f}")
    print(f"{'arm':<12} {'dev per seed':>22} {'mean':>7} {'vs teacher':>10} {'test mean':>9} {'steps':>6} {'train s':>8}")
    for arm in arms:
        ms = [load(p) for p in sorted(runs.glob(f"{task}-{arm}-s*"))]
        done = [m for m in ms if m]
        devs = [pick(m, "eval") for m in done]
        tests = [v for v in (pick(m, "test") for m in done) if v is not None]
        if not devs or None in devs:
            print(f"{arm:<12} {len(done)}/{len(ms)} finished")
            continue
        mean = statistics.mean(devs)
        vs = f"{mean - pick(t, 'eval'):+.2f}" if t else "-"
        print(f"{arm:<12} {' / '.join(f'{v:.2f}' for v in devs):>22} {mean:>7.2f} {vs:>10} "
              f"{(f'{statistics.mean(tests):.2f}' if tests else '-'):>9} {done[0].get('steps', 0):>6} "
              f"{statistics.mean(m.get('train_seconds', 0) for m in done):>8.1f}"
              + ("" if len(done) == len(ms) else f"  ({len(done)}/{len(ms)} finished)"))
EOF
tar -czf "$OUT/gpu_distill_logs.tar.gz" -C "$R" logs
