"""Generate the demo's data: a small bilingual (English/Chinese) review corpus for MLM pretraining and
a labelled sentiment set (train/dev) plus unlabelled inputs for predict.

Written for bertkit (no outside dataset); deterministic for a given --seed.

    python examples/demo/make_data.py OUT_DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from pathlib import Path

SUBJECTS = ["the food", "the service", "the room", "this phone", "the movie", "the book", "the hotel", "the staff",
            "the battery", "the screen", "the music", "the coffee", "the delivery", "the app", "the camera"]
POS = ["great", "excellent", "wonderful", "amazing", "fantastic", "delightful", "superb", "lovely", "perfect",
       "impressive", "reliable", "friendly", "brilliant", "pleasant", "outstanding"]
NEG = ["terrible", "awful", "horrible", "disappointing", "poor", "broken", "rude", "boring", "dreadful", "useless",
       "slow", "dirty", "noisy", "annoying", "mediocre"]
ADV = ["really", "truly", "quite", "very", "absolutely", "rather", "so", "incredibly"]
POS_END = ["i would buy it again", "highly recommended", "we will come back", "worth every penny",
           "five stars from me", "i loved every minute"]
NEG_END = ["i want a refund", "never again", "a waste of money", "avoid it", "one star at most",
           "i regret buying it"]
NEUTRAL = ["we arrived on a tuesday afternoon", "the package came in a brown box", "it was my second visit",
           "i used it for about two weeks", "my friend recommended it to me", "the price was listed on the website",
           "there were many people that day", "it comes in three colours"]

ZH_SUBJ = ["这家餐厅", "酒店房间", "这部手机", "这部电影", "服务员", "快递", "这本书", "屏幕", "电池", "咖啡"]
ZH_POS = ["非常好", "很满意", "特别棒", "太好了", "值得推荐", "质量很好", "很干净", "很舒服"]
ZH_NEG = ["太差了", "很失望", "非常糟糕", "质量很差", "不推荐", "很脏", "太慢了", "很吵"]
ZH_NEUTRAL = ["我们周末去的", "价格在网上可以查到", "这是第二次来", "朋友推荐的", "用了大概两个星期"]


def review(rng: random.Random, positive: bool) -> str:
    if rng.random() < 0.25:
        words = ZH_POS if positive else ZH_NEG
        parts = [rng.choice(ZH_SUBJ) + rng.choice(words)]
        if rng.random() < 0.6:
            parts.insert(0, rng.choice(ZH_NEUTRAL))
        if rng.random() < 0.5:
            parts.append(rng.choice(ZH_SUBJ) + rng.choice(words))
        return "，".join(parts) + "。"
    words, ends = (POS, POS_END) if positive else (NEG, NEG_END)
    if rng.random() < 0.3:  # negation: "not great" is negative, "not bad" positive
        s = f"{rng.choice(SUBJECTS)} was not {rng.choice(NEG if positive else POS)}"
    else:
        s = f"{rng.choice(SUBJECTS)} was {rng.choice(ADV)} {rng.choice(words)}"
    parts = [s]
    if rng.random() < 0.5:
        parts.insert(0, rng.choice(NEUTRAL))
    if rng.random() < 0.5:
        parts.append(f"and {rng.choice(SUBJECTS)} was {rng.choice(words)}")
    if rng.random() < 0.3:
        parts.append(rng.choice(ends))
    return ", ".join(parts) + "."


def labelled(rng: random.Random, n: int, noise: float) -> list[tuple[str, str]]:
    rows = []
    for _ in range(n):
        pos = rng.random() < 0.5
        label = "positive" if pos else "negative"
        if rng.random() < noise:  # a little label noise keeps the task from being trivial
            label = "negative" if pos else "positive"
        rows.append((review(rng, pos), label))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--corpus-docs", type=int, default=1500)
    ap.add_argument("--train", type=int, default=1200)
    ap.add_argument("--dev", type=int, default=300)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    a.out.mkdir(parents=True, exist_ok=True)
    with open(a.out / "corpus.txt", "w", encoding="utf-8") as fh:
        for d in range(a.corpus_docs):
            for _ in range(rng.randint(1, 4)):
                fh.write(" ".join(review(rng, rng.random() < 0.5) for _ in range(rng.randint(1, 3))) + "\n")
            fh.write("\n")  # blank line between documents
    for name, n, noise in (("train", a.train, 0.05), ("dev", a.dev, 0.0)):
        with open(a.out / f"{name}.csv", "w", encoding="utf-8", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["text", "label"])
            w.writerows(labelled(rng, n, noise))
    with open(a.out / "predict.jsonl", "w", encoding="utf-8") as fh:
        for text, _ in labelled(rng, 20, 0.0):
            fh.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    with open(a.out / "fill_mask.txt", "w", encoding="utf-8") as fh:
        # collocations the corpus teaches (a tiny model learns them in the demo's 800 steps), then an
        # open slot where any adjective of the right sentiment fits
        fh.write("the coffee was great, highly [MASK].\n")
        fh.write("the hotel was superb, worth every [MASK].\n")
        fh.write("这家餐厅值得推[MASK]。\n")
        fh.write("the food was really [MASK], highly recommended.\n")
    print(f"demo data written to {a.out}")


if __name__ == "__main__":
    main()
