"""English -> Spanish translation on the Bible verse pairs (examples/translation_en_es.yaml; test
verses come from whole books never seen in training), trained for a fixed CPU budget.

The number of epochs is chosen to fill the budget from a timed one-epoch run on a sample of the
training verses; the schedule then runs its full course. Prints test BLEU and chrF (sacrebleu),
training tokens/s, and generation sentences/s and BLEU with greedy vs beam search.

    python benchmarks/translation.py                 # 20-minute budget
    python benchmarks/translation.py --minutes 10
    python benchmarks/translation.py --quick         # CI smoke test: 600 verses, 1 epoch
"""
from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP: spinning threads hurt a busy machine
import torch  # noqa: E402

import lamina  # noqa: E402
from lamina import datasets  # noqa: E402
from common import lamina_source, machine  # noqa: E402

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "translation_en_es.yaml"
GENERATION_ROWS = 300


def tokens(model: lamina.Model, frame) -> int:
    """Real (non-padding) source + target tokens of the rows, as the model tokenizes them."""
    source, target = model.inputs_[0], model.outputs_[0]
    return int((source.transform(frame[source.config.name]) != 0).sum()
               + (target.target(frame[target.config.name]) != 0).sum())


def timed_generation(model: lamina.Model, rows, beam_size: int) -> dict:
    head = model.network_.heads[0]
    head.beam_size = beam_size
    began = time.perf_counter()
    predicted = model.predict(rows[["english"]])["spanish"]
    seconds = time.perf_counter() - began
    import sacrebleu
    references = list(rows["spanish"])
    return {"sentences_per_second": len(rows) / seconds,
            "bleu": sacrebleu.corpus_bleu(list(predicted), [references]).score,
            "chrf": sacrebleu.corpus_chrf(list(predicted), [references]).score, "example": predicted.iloc[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget")
    parser.add_argument("--quick", action="store_true", help="600 verses, 1 epoch: a smoke test, not figures")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    frame = datasets.load("bible_en_es")
    base = lamina.load_config(CONFIG).to_dict()
    if args.quick:
        frame = frame.groupby("split").head(200)
    train_rows = int((frame["split"] == "train").sum())
    print(f"bible_en_es: {len(frame):,} verse pairs; " + ", ".join(
        f"{part} {count:,}" for part, count in frame["split"].value_counts().items())
        + f"; torch {torch.__version__}, {args.threads} threads"
        + ("; QUICK MODE: figures are not meaningful" if args.quick else "")
        + f"\n  {machine()}\n  {lamina_source()}")

    if args.quick:
        epochs = 1
    else:  # time one epoch on a sample of the training verses, then fill the budget
        sample = frame[frame["split"] == "train"].sample(1000, random_state=0)
        probe = base | {"training": base["training"] | {"epochs": 1, "early_stopping": None},
                        "split": {"method": "random", "ratios": [1.0, 0.0, 0.0]}}
        probe["outputs"] = [probe["outputs"][0] | {"beam_size": 1}]
        history = lamina.Model(probe).fit(sample, quiet=True).training_["history"]
        per_row = history[0]["seconds"] / len(sample)  # the epoch alone, not the final scoring
        epochs = max(1, math.floor(args.minutes * 60 / (per_row * train_rows * 1.1)))  # 10% for validation
        print(f"  calibration: {per_row * 1000:.1f} ms per training verse -> {epochs} epochs in "
              f"{args.minutes:g} minutes", flush=True)
    # the test BLEU over every test verse is measured with greedy decoding (beam search on all of them
    # would cost minutes); greedy and beam are compared below on the first verses
    config = base | {"training": base["training"] | {"epochs": epochs, "early_stopping": None}}
    config["outputs"] = [config["outputs"][0] | {"beam_size": 1}]

    began = time.perf_counter()
    model = lamina.Model(config).fit(frame, quiet=False)
    wall = time.perf_counter() - began
    history = model.training_["history"]
    epoch_seconds = sum(record["seconds"] for record in history)
    train = frame[frame["split"] == "train"]
    rate = tokens(model, train) * len(history) / epoch_seconds
    test = model.metrics_["test"]["spanish"]
    print(f"\ntrained {len(history)} epochs in {epoch_seconds / 60:.1f} min ({wall / 60:.1f} min with tokenizer "
          f"training and final scoring); training throughput {rate:,.0f} tokens/s (source + target, "
          f"including per-epoch validation)")
    print(f"test, all {len(frame[frame['split'] == 'test']):,} verses (greedy): BLEU {test['bleu']:.2f}, chrF {test['chrf']:.2f}, "
          f"token accuracy {test['token_accuracy']:.3f}, perplexity {test['perplexity']:.1f}")

    rows = frame[frame["split"] == "test"].head(GENERATION_ROWS)
    print(f"\n| decoding ({len(rows)} test verses) | sentences/s | BLEU | chrF |\n|---|---:|---:|---:|")
    for beam_size in (1, 4):
        result = timed_generation(model, rows, beam_size)
        label = "greedy" if beam_size == 1 else f"beam {beam_size}"
        print(f"| {label} | {result['sentences_per_second']:.1f} | {result['bleu']:.2f} | {result['chrf']:.2f} |")
    print(f"\nexample: {rows['english'].iloc[0]!r}\n  -> {result['example']!r}\n  reference {rows['spanish'].iloc[0]!r}")


if __name__ == "__main__":
    main()
