#!/usr/bin/env python
"""Draw the README's pictures into docs/img/ (SVG, needs matplotlib: the `plots` extra).

* speedups.svg: the throughput ratios of the README's "Headline figures" table (the rows whose ratio is
  written "N.NNx"), read from README.md itself so the chart and the table cannot disagree.
* pipeline.svg: the commands and what flows between them.

    python docs/make_figures.py
"""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

DOCS = Path(__file__).resolve().parent
README = DOCS.parent / "README.md"
IMG = DOCS / "img"
MARKER = "<!-- headline-figures"
RATIO = re.compile(r"^(\d+(?:\.\d+)?)x$")

# Reproducible files: no date in the metadata, fixed ids, text kept as text (small, searchable).
plt.rcParams.update({"svg.hashsalt": "bertkit", "svg.fonttype": "none", "font.family": "DejaVu Sans",
                     "font.size": 10})
SAVE = {"format": "svg", "metadata": {"Date": None}, "bbox_inches": "tight"}


def plain(cell: str) -> str:
    """A markdown table cell as plain text: links and code spans unwrapped."""
    cell = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", cell)
    return cell.replace("`", "").strip()


def headline_rows(readme: Path) -> list[tuple[str, float, str]]:
    """(figure, ratio, peer) for each row of the table after MARKER whose ratio reads N.NNx."""
    lines = readme.read_text(encoding="utf-8").splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(MARKER)), None)
    if start is None:
        raise SystemExit(f"{readme}: no line starting {MARKER!r} before the headline table")
    rows = []
    for line in lines[start + 3:]:  # the marker, the header, the separator
        if not line.startswith("|"):
            break
        cells = [plain(c) for c in line.strip().strip("|").split("|")]
        match = RATIO.match(cells[1])
        if match:
            rows.append((cells[0], float(match.group(1)), cells[2].split(";")[0].strip()))
    if not rows:
        raise SystemExit(f"{readme}: the headline table has no N.NNx ratios")
    return rows


def speedups(rows: list[tuple[str, float, str]], out: Path) -> None:
    rows = rows[::-1]  # barh draws bottom-up; keep the table's order top-down
    fig, ax = plt.subplots(figsize=(8.5, 0.42 * len(rows) + 1.0))
    ys = range(len(rows))
    ax.barh(ys, [r[1] for r in rows], color="#4878a8", height=0.6)
    ax.axvline(1.0, color="#b03a2e", linewidth=1.2)
    ax.text(1.0, len(rows) - 0.35, " peer = 1x", color="#b03a2e", va="bottom", fontsize=9)
    for y, (_, ratio, peer) in zip(ys, rows):
        ax.text(ratio + 0.05, y, f"{ratio:.2f}x  vs {peer}", va="center", fontsize=8.5)
    ax.set_yticks(list(ys), [r[0] for r in rows])
    ax.set_xlim(0, max(r[1] for r in rows) * 1.6)
    ax.set_xlabel("throughput, bertkit / peer (same model, data, steps, threads; 2-core CPU)")
    ax.spines[["top", "right"]].set_visible(False)
    fig.savefig(out, **SAVE)
    plt.close(fig)


STAGES = [  # (label, what it writes)
    ("tokenize", "tokenizer/\npacked dataset/"),
    ("pretrain-mlm", "masked-LM\nmodel dir"),
    ("finetune-cls\n-qa / -ner", "classifier, QA or\ntagger model dir"),
    ("distill\nexport", "smaller student;\nmodel.onnx fp32/int8"),
    ("predict\nserve", "predictions.jsonl,\nHTTP /predict"),
]


def pipeline(out: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 2.7))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 2.7)
    ax.axis("off")
    width, gap = 1.55, 0.5
    xs = [0.1 + i * (width + gap) for i in range(len(STAGES))]
    for x, (label, writes) in zip(xs, STAGES):
        ax.add_patch(FancyBboxPatch((x, 1.05), width, 0.9, boxstyle="round,pad=0.02,rounding_size=0.12",
                                    facecolor="#dce8f4", edgecolor="#4878a8", linewidth=1.2))
        ax.text(x + width / 2, 1.5, label, ha="center", va="center", fontsize=10.5, family="monospace",
                weight="bold")
        ax.text(x + width / 2, 0.62, writes, ha="center", va="center", fontsize=8.5, color="#444444")
    for a, b in zip(xs, xs[1:]):
        ax.add_patch(FancyArrowPatch((a + width + 0.04, 1.5), (b - 0.04, 1.5), arrowstyle="-|>",
                                     mutation_scale=14, color="#4878a8", linewidth=1.3))
    # a pretrained model (MiniLM, any local BERT dir) enters at fine-tuning; predict also takes torch dirs
    ax.annotate("or a local pretrained model\n(--model minilm-l6, any BERT dir)", xy=(xs[2] + width / 2, 1.98),
                xytext=(xs[1] + width / 2, 2.65), ha="center", va="top", fontsize=8, color="#444444",
                arrowprops={"arrowstyle": "-|>", "color": "#999999", "connectionstyle": "arc3,rad=-0.25"})
    ax.text(5, 0.08, "sweep: runs finetune-cls / -qa / -ner as trials    ·    evaluate scores any model dir    ·    "
            "every model dir loads in transformers",
            ha="center", fontsize=8.5, color="#444444")
    fig.savefig(out, **SAVE)
    plt.close(fig)


def main() -> None:
    IMG.mkdir(exist_ok=True)
    speedups(headline_rows(README), IMG / "speedups.svg")
    pipeline(IMG / "pipeline.svg")
    print(f"wrote {IMG / 'speedups.svg'} and {IMG / 'pipeline.svg'}")


if __name__ == "__main__":
    main()
