#!/usr/bin/env bash
# The end-to-end demo: generated bilingual review data -> WordPiece tokenizer -> tiny MLM
# pretraining -> sentiment fine-tuning -> predictions.  Offline, a few minutes on 2 CPU cores.
set -euo pipefail
OUT=${1:-demo-output}
BIN=${BIN:-.venv/bin}
BK="$BIN/bertkit"
rm -rf "$OUT"
mkdir -p "$OUT"
start=$(date +%s)
step() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }

step "1/5 generating demo data (English + Chinese reviews) in $OUT/data"
"$BIN/python" examples/demo/make_data.py "$OUT/data"

step "2/5 bertkit tokenize: train a WordPiece tokenizer, pack the corpus into 64-token blocks"
"$BK" tokenize "$OUT/data/corpus.txt" --output "$OUT/tokenized" --train-tokenizer --vocab-size 2000 \
    --max-seq-length 64

step "3/5 bertkit pretrain-mlm: a tiny BERT (2 layers, 128 hidden) from scratch"
# no dropout: a short pretraining underfits, and dropout 0 leaves the unigram plateau (predicting
# "the", "was", "and" everywhere) early (docs/guide.md, Chinese)
"$BK" pretrain-mlm --data "$OUT/tokenized" --output "$OUT/mlm" --preset tiny --max-steps 800 \
    --batch-size 32 --lr 2e-3 --mlm-probability 0.2 --logging-steps 100 --set model.dropout=0

step "4/5 bertkit finetune-cls: sentiment classifier on top of the pretrained model"
"$BK" finetune-cls --model "$OUT/mlm" --train "$OUT/data/train.csv" --validation "$OUT/data/dev.csv" \
    --output "$OUT/classifier" --epochs 4 --batch-size 32 --lr 5e-4 --max-seq-length 64

step "5/5 bertkit predict: classification and fill-mask"
"$BK" predict --model "$OUT/classifier" --input "$OUT/data/predict.jsonl" --output "$OUT/predictions.jsonl"
"$BK" predict --model "$OUT/mlm" --input "$OUT/data/fill_mask.txt" --output "$OUT/fill_mask.jsonl" --top-k 3

"$BIN/python" - "$OUT" "$start" <<'PY'
import json, sys, time
out, start = sys.argv[1], int(sys.argv[2])
m = json.load(open(f"{out}/classifier/metrics.json"))
mlm = json.load(open(f"{out}/mlm/metrics.json"))
preds = [json.loads(l) for l in open(f"{out}/predictions.jsonl")]
fill = [json.loads(l) for l in open(f"{out}/fill_mask.jsonl")]
acc = m["eval_accuracy"]
print(f"""
bertkit demo finished in {time.time() - start:.0f}s
  tokenizer + packed data : {out}/tokenized
  pretrained MLM          : {out}/mlm   (eval loss {mlm['eval_loss']:.3f}, perplexity {mlm['perplexity']:.1f}, masked accuracy {mlm['masked_accuracy']:.3f})
  classifier              : {out}/classifier
  held-out accuracy       : {acc:.3f} on {m['eval_examples']} dev examples (chance: 0.5), F1 {m['eval_f1']:.3f}
  predictions             : {out}/predictions.jsonl ({len(preds)} rows), e.g. {preds[0]['label']} ({preds[0]['score']:.2f}): {preds[0]['text'][:60]}
  fill-mask               : {out}/fill_mask.jsonl, top 3 for each [MASK]:""")
for f in fill:
    print(f"      {f['text']:50} -> {', '.join(c['token_str'] for c in f['masks'][0])}")
print(f"""Load them with transformers.pipeline("text-classification", model="{out}/classifier")
            or transformers.pipeline("fill-mask", model="{out}/mlm").""")
if acc < 0.7:
    sys.exit(f"demo: accuracy {acc:.3f} is not clearly above chance")
PY
