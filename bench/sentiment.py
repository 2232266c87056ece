"""Sentiment baselines: MR 10-fold CV and SST-2 dev accuracy, training cost, export latency.

For each model family (bilstm, lstm, gru, tcn, rnn) trains seqapp's classifier with
`runner.cross_validate` on MR's shipped folds, and BiLSTM and TCN with `runner.train`
on GLUE SST-2 (dev accuracy; GLUE hides test labels). The SST-2 runs train the shipped
definitions `pipelines/sentiment_<family>.yaml` (with this run's seed and epochs), so
`seqapp train` on those files reproduces the figures. Records wall time and training
tokens/s per model, then exports the SST-2 BiLSTM and times its `serving_default`
signature at batch 1 and 64. Accuracies are fractions. Partial results are written
after every model, so an interrupted run still leaves its figures.

    SEQAPP_DATA_DIR=../shared/data python bench/sentiment.py
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from seqapp import config
from seqapp import runner
from seqapp import tasks
from seqapp.training import warm_start

import common

FAMILIES = ("bilstm", "lstm", "gru", "tcn", "rnn")
SST2_FAMILIES = ("bilstm", "tcn")
PUBLISHED = {
    "mr": {"CNN-rand (Kim 2014)": 0.761, "NBSVM-bi (Wang & Manning 2012)": 0.794,
           "CNN-non-static, word2vec (Kim 2014)": 0.815},
    "sst2": {"GLUE BiLSTM baseline (test)": 0.859},
}
GOALS = {"mr_bilstm": 0.78, "sst2_bilstm": 0.85}


def definition(dataset, family, args, **train):
    pretrained = {"embeddings": {"corpus": args.embeddings}} if args.embeddings else {}
    return config.validate({
        "task": "classification",
        "seed": args.seed,
        "data": {"dataset": dataset},
        # A pretraining corpus brings a bigger vocabulary than MR's 10k sentences support.
        "tokenizer": {"vocab_size": 16000 if args.embeddings else 8000},
        "pipeline": {"max_length": 64, "tokens_per_batch": 2048},
        "model": {"family": family, "embedding_dim": 128, "units": 128 if family == "tcn" else 64,
                  "dropout": 0.5, "pooling": "max"},
        "train": {"epochs": args.epochs, "learning_rate": 1e-3, "clipnorm": 1.0, "early_stopping_patience": 2,
                  **train},
        **pretrained,
    }, source=f"<bench {dataset} {family}>")


def epochs_run(work_dir):
    return len(common.training_history(work_dir))


def train_tokens(defn, fold=None):
    return int(tasks.of(defn).inputter(defn, fold=fold).train_lengths.sum())


def mr_cv(family, args, work_root):
    defn = definition("mr_polarity", family, args, folds=args.folds)
    start = time.perf_counter()
    summary = runner.cross_validate(defn, work_root / f"mr_{family}", verbose=args.verbose)
    wall = time.perf_counter() - start
    tokens = sum(train_tokens(defn, fold) * epochs_run(work_root / f"mr_{family}" / f"fold{fold}")
                 for fold in range(args.folds))
    return summary, {"wall_s": wall, "tokens_per_s": tokens / wall,
                     "epochs_per_fold": [epochs_run(work_root / f"mr_{family}" / f"fold{f}") for f in range(args.folds)]}


def sst2_definition(family, args):
    return config.load_definition(Path(__file__).resolve().parents[1] / "pipelines" / f"sentiment_{family}.yaml",
                                  {"seed": args.seed, "train.epochs": args.epochs})


def embeddings_of(defn):
    """How a definition's embeddings (and encoder) start, in words."""
    how = "random"
    if defn.embeddings is not None:
        tuning = "fine-tuned" if defn.embeddings.trainable else "frozen"
        how = f"word2vec on {'+'.join(defn.embeddings.corpus)}, {tuning}"
    if defn.train.init_from is not None:
        how += f"; embeddings and encoder start from the model of {defn.train.init_from}"
    return how


def sst2(family, args):
    """Trains `pipelines/sentiment_<family>.yaml` on SST-2; returns (results, cost, definition, run folder)."""
    defn = sst2_definition(family, args)
    work_dir = Path(args.work_root) / ("pretrained" if defn.embeddings else "random") / f"sst2_{family}"
    # The model it starts from is trained (or found in the cache) first, and costed on its own.
    start_from = initial_model(defn) if defn.train.init_from is not None else None
    start = time.perf_counter()
    results = runner.train(defn, work_dir, verbose=args.verbose)
    wall = time.perf_counter() - start
    tokens = train_tokens(defn) * epochs_run(work_dir)
    cost = {"wall_s": wall, "tokens_per_s": tokens / wall, "epochs": epochs_run(work_dir)}
    if start_from is not None:
        cost["init_from"] = start_from
    return results, cost, defn, work_dir


def initial_model(defn):
    """Trains (or finds) the run `train.init_from` names; its cost and scores, from its own files."""
    init_dir = warm_start.initial_run(defn)
    training = json.loads((init_dir / "training.json").read_text())
    metrics = json.loads((init_dir / "metrics.json").read_text())
    return {"definition": defn.train.init_from, "wall_s": training["wall_seconds"], "epochs": training["epochs"],
            "tokens_per_s": training["tokens_per_second"],
            "accuracy": {split: metrics[split]["accuracy"] for split in ("validation", "test") if split in metrics}}


def latency(work_dir, export_dir, repeats):
    path = runner.export(work_dir, export_dir)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    sentences = [line.split("\t")[0] for line in
                 (Path(common.data_dir()) / "sst2" / "dev.tsv").read_text().split("\n")[1:] if line]
    figures = {}
    for batch in (1, 64):
        texts = tf.constant(sentences[:batch])
        serve(text=texts)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            serve(text=texts)
            times.append((time.perf_counter() - start) * 1000)
        figures[f"batch_{batch}"] = {"p50_ms": float(np.percentile(times, 50)),
                                     "p99_ms": float(np.percentile(times, 99)), "repeats": repeats}
    return figures


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="*", default=list(FAMILIES))
    parser.add_argument("--sst2-families", nargs="*", default=list(SST2_FAMILIES))
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per latency figure")
    parser.add_argument("--work-root", default="runs/bench_sentiment")
    parser.add_argument("--verbose", type=int, default=2)
    parser.add_argument("--embeddings", nargs="*", default=["imdb"], metavar="CORPUS",
                        help="pretrain the embeddings with word2vec on these datasets/files (default: imdb); "
                             "none given: random embeddings")
    args = parser.parse_args()
    work_root = Path(args.work_root) / ("pretrained" if args.embeddings else "random")
    embedding = f"word2vec on {'+'.join(args.embeddings)}, fine-tuned" if args.embeddings else "random"
    figures = {"accuracy_unit": "fraction", "mr_cv_accuracy": {}, "mr_cv_macro_f1": {}, "sst2_dev_accuracy": {},
               "training": {"mr": {}, "sst2": {}}, "published": PUBLISHED}
    previous = common.RESULTS / "sentiment.json"
    if previous.exists():
        # Models not run now keep their figures from the last run, each saying how it was trained.
        last = json.loads(previous.read_text())
        for key in ("mr_cv_accuracy", "mr_cv_macro_f1", "sst2_dev_accuracy", "sst2_dev_embeddings",
                    "sst2_definitions"):
            chosen = args.sst2_families if key.startswith("sst2") else args.families
            figures[key] = {family: value for family, value in last.get(key, {}).items() if family not in chosen}
        for family, value in figures["mr_cv_accuracy"].items():
            value.setdefault("embeddings", "random")
        for family in figures["sst2_dev_accuracy"]:
            figures["sst2_dev_embeddings"].setdefault(family, "random")
        for dataset, chosen in (("mr", args.families), ("sst2", args.sst2_families)):
            figures["training"][dataset] = {family: value for family, value in last["training"][dataset].items()
                                            if family not in chosen}
        for key in ("settings_of_earlier_figures", "export_latency_sst2_bilstm"):
            if key in last:
                figures[key] = last[key]
        if "settings_of_earlier_figures" not in figures:
            figures["settings_of_earlier_figures"] = {**last["settings"], "embeddings": "random",
                                                      "run": last["environment"]}
    figures["settings"] = {"folds": args.folds, "max_epochs": args.epochs, "seed": args.seed,
                           "model": definition("mr_polarity", "bilstm", args).model.model_dump(),
                           "embeddings": embedding, "tcn_units": 128,
                           "early_stopping": "val_accuracy, patience 2, best weights",
                           "sst2": "the shipped pipelines/sentiment_<family>.yaml: see sst2_definitions"}
    for family in args.families:
        summary, cost = mr_cv(family, args, work_root)
        figures["mr_cv_accuracy"][family] = {**{k: summary["accuracy"][k] for k in ("mean", "std", "per_fold")},
                                             "embeddings": embedding}
        figures["mr_cv_macro_f1"][family] = {k: summary["macro_f1"][k] for k in ("mean", "std")}
        figures["training"]["mr"][family] = cost
        print(f"MR {family}: {summary['accuracy']['mean']:.4f} ± {summary['accuracy']['std']:.4f}", flush=True)
        common.write("sentiment", figures)
    work_dirs = {}
    for family in args.sst2_families:
        results, cost, defn, work_dirs[family] = sst2(family, args)
        figures["sst2_dev_accuracy"][family] = results["validation"]["accuracy"]
        figures.setdefault("sst2_dev_embeddings", {})[family] = embeddings_of(defn)
        figures.setdefault("sst2_definitions", {})[family] = {
            "file": f"pipelines/sentiment_{family}.yaml",
            **defn.model_dump(mode="json", include={"tokenizer", "pipeline", "model", "train", "embeddings"})}
        figures["training"]["sst2"][family] = cost
        print(f"SST-2 {family}: dev {results['validation']['accuracy']:.4f}", flush=True)
        common.write("sentiment", figures)
    if "bilstm" in args.sst2_families:
        export_dir = work_dirs["bilstm"].parent / "export" / "sentiment"
        shutil.rmtree(export_dir, ignore_errors=True)
        figures["export_latency_sst2_bilstm"] = latency(work_dirs["bilstm"], export_dir, args.repeats)
    figures["goals"] = {
        "mr_bilstm_ge_0.78": figures["mr_cv_accuracy"].get("bilstm", {}).get("mean", 0) >= GOALS["mr_bilstm"],
        "sst2_bilstm_ge_0.85": figures["sst2_dev_accuracy"].get("bilstm", 0) >= GOALS["sst2_bilstm"],
    }
    common.write("sentiment", figures)


if __name__ == "__main__":
    main()
