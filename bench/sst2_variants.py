"""SST-2 BiLSTM variants: dev accuracy of the shipped definition with one change at a time.

Trains `pipelines/sentiment_bilstm.yaml` (the model bench/sentiment.py reports) with each
variant's overrides, as `seqapp train --set` would, once per seed, and records dev accuracy
and macro-F1 per run, their mean, and the change from the shipped definition at the same
seeds. Runs stop early on dev (GLUE's test labels are hidden), except `validation_from_train`;
each run that does also records dev accuracy after every epoch, so the figures of a fixed epoch
count, chosen without dev, are there too. A run folder whose saved definition equals the one to train is read instead of
trained again (`--work-root`), so an interrupted sweep resumes. Accuracies are fractions.

    SEQAPP_DATA_DIR=../shared/data python bench/sst2_variants.py                 # seed 42
    SEQAPP_DATA_DIR=../shared/data python bench/sst2_variants.py --seeds 42 7 --variants shipped attention_pooling

Each run takes 2-4 minutes on 2 CPU cores once the IMDB embeddings and the IMDB model it starts
from are cached. Figures of variants and seeds not run keep their values from the last run, while
the shipped definition stays the same; when it changes, the last figures move to `earlier`.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import yaml

from seqapp import config
from seqapp import runner

import common

PIPELINE = Path(__file__).resolve().parents[1] / "pipelines" / "sentiment_bilstm.yaml"
VARIANTS = {
    "shipped": {},
    "no_init_from": {"train.init_from": None},
    "frozen_embeddings": {"embeddings.trainable": False},
    "embedding_dim_300": {"model.embedding_dim": 300},
    "attention_pooling": {"model.pooling": "attention"},
    "dropout_0.3": {"model.dropout": 0.3},
    "tokens_per_batch_512": {"pipeline.tokens_per_batch": 512},
    "balanced_class_weight": {"train.class_weight": "balanced"},
    # Dev untouched by training: early stopping watches the last 5% of GLUE's train phrases instead,
    # and dev is the run's test split.
    "validation_from_train": {"data.splits.train": "train[:95%]", "data.splits.validation": "train[95%:]",
                              "data.splits.test": "validation"},
}
# Where a definition may live without changing what it trains.
_LOCATION = {"origin", "base_dir"}


def definition(overrides, seed):
    return config.load_definition(PIPELINE, {**overrides, "seed": seed})


def finished_run(work_dir, defn):
    """The run's metrics when `work_dir` holds a finished run of exactly `defn`, else None."""
    saved, metrics = work_dir / "definition.yaml", work_dir / "metrics.json"
    if not (saved.exists() and metrics.exists()):
        return None
    previous = config.validate(yaml.safe_load(saved.read_text()))
    if previous.model_dump(exclude=_LOCATION) != defn.model_dump(exclude=_LOCATION):
        return None
    return json.loads(metrics.read_text())


def dev_split(defn):
    """The run split that holds SST-2's dev set (GLUE's `validation`), which every figure here is on."""
    splits = defn.data.splits
    return next(role for role in ("validation", "test")
                if ((getattr(splits, role) if splits else None) or role) == "validation")


def run(name, seed, args):
    defn = definition(VARIANTS[name], seed)
    work_dir = Path(args.work_root) / f"{name}_seed{seed}"
    metrics = finished_run(work_dir, defn)
    reused = metrics is not None
    if not reused:
        metrics = runner.train(defn, work_dir, verbose=args.verbose)
    split = dev_split(defn)
    cell = {"accuracy": metrics[split]["accuracy"], "macro_f1": metrics[split]["macro_f1"],
            "early_stopping_on": "dev" if split == "validation" else defn.data.splits.validation,
            "run": str(work_dir), "reused": reused}
    if split == "validation":
        # Dev accuracy after each epoch: what a fixed epoch count, chosen without dev, would have given.
        cell["dev_accuracy_by_epoch"] = [float(row["val_accuracy"]) for row in common.training_history(work_dir)]
    return cell


def summarize(figures):
    shipped = figures["runs"].get("shipped", {})
    summary = {}
    for name, per_seed in figures["runs"].items():
        accuracies = {seed: cell["accuracy"] for seed, cell in per_seed.items()}
        same_seeds = [seed for seed in accuracies if seed in shipped]
        summary[name] = {
            "seeds": sorted(accuracies, key=int),
            "mean_accuracy": float(np.mean(list(accuracies.values()))),
            # Paired by seed: the shipped definition's run with the same seed.
            "vs_shipped": (float(np.mean([accuracies[s] - shipped[s]["accuracy"] for s in same_seeds]))
                           if same_seeds else None),
        }
        by_epoch = [cell["dev_accuracy_by_epoch"] for cell in per_seed.values() if "dev_accuracy_by_epoch" in cell]
        if by_epoch and len(by_epoch) == len(per_seed):
            summary[name]["mean_dev_accuracy_after_epoch"] = {
                str(epoch + 1): float(np.mean([curve[epoch] for curve in by_epoch]))
                for epoch in range(min(map(len, by_epoch)))}
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--work-root", default="runs/bench_sst2_variants")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()
    previous = common.RESULTS / "sst2_variants.json"
    shipped = definition({}, 0).model_dump(mode="json", exclude=_LOCATION | {"seed"})
    figures = {"accuracy_unit": "fraction", "runs": {}, "earlier": []}
    if previous.exists():
        last = json.loads(previous.read_text())
        figures["earlier"] = last.get("earlier", [])
        if last.get("shipped_definition") == shipped:
            figures["runs"] = last["runs"]
        else:  # the shipped definition changed: those figures compare against another baseline
            figures["earlier"].append({key: last[key] for key in ("shipped_definition", "variants", "runs", "summary",
                                                                  "environment") if key in last})
    figures["pipeline"] = "pipelines/sentiment_bilstm.yaml"
    figures["shipped_definition"] = shipped
    figures["variants"] = VARIANTS
    for name in args.variants:
        for seed in args.seeds:
            cell = run(name, seed, args)
            figures["runs"].setdefault(name, {})[str(seed)] = cell
            print(f"{name} seed {seed}: dev accuracy {cell['accuracy']:.4f}", flush=True)
            figures["summary"] = summarize(figures)
            common.write("sst2_variants", figures)


if __name__ == "__main__":
    main()
