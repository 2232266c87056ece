"""The biLM: PTB perplexity of `pipelines/bilm_ptb.yaml`, and what the biLM adds to sentiment.

Parts (`--jobs`, default all; a run keeps the other parts' figures in `bench/results/bilm.json`):

- ptb: trains `pipelines/bilm_ptb.yaml` and measures test perplexity the standard way (the test set
  as one stream, state carried, every word and <eos>, full softmax): forward, backward and their
  geometric mean, with parameters, training time, tokens/s and the character encoder's share of a
  training step's time.

- imdb: pretrains `pipelines/bilm_imdb.yaml` (a slice of IMDB's reviews, see there) as the classifiers
  below will find it in the cache: wall time, tokens/s, perplexity.
- mr: MR 10-fold cross-validation accuracy of `pipelines/sentiment_mr_cv.yaml` without and with
  `model.bilm` (the IMDB biLM, frozen, concatenated).
- sst2: SST-2 dev accuracy of `pipelines/sentiment_bilstm.yaml` and `pipelines/sentiment_bilm.yaml`
  (the same classifier with the IMDB biLM), one run per seed (`--seeds`), and their mean.

mr and sst2 can measure one side at a time (`--variants with_bilm`), to split the hours across runs;
the other side's figures already in the results file are kept, and the goals are judged once both are.

    SEQAPP_DATA_DIR=../shared/data python bench/bilm.py --jobs ptb         # about 90 minutes on 2 cores
    SEQAPP_DATA_DIR=../shared/data python bench/bilm.py --jobs imdb sst2
    SEQAPP_DATA_DIR=../shared/data python bench/bilm.py --jobs mr --variants with_bilm   # about 1 hour each side
    SEQAPP_DATA_DIR=../shared/data python bench/bilm.py --jobs ptb --set train.epochs=1 \\
        --set data.max_train_examples=2000 --work-dir /tmp/bilm_bench --out /tmp/bilm.json  # smoke
"""

import argparse
import json
import time
from pathlib import Path

import common

ROOT = Path(__file__).resolve().parents[1]


def parse_value(text):
    import yaml

    return yaml.safe_load(text)


def encoder_share(model, batches, repeats=3):
    """The character CNN's share of a training step's time (forward and gradients), on `batches`."""
    import tensorflow as tf

    @tf.function
    def whole(features):
        with tf.GradientTape() as tape:
            loss = model.compute_loss(features, None, model(features, training=True), training=True)
        return tape.gradient(loss, model.trainable_variables)

    @tf.function
    def encoder(features):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model.token_encoder(features["chars"]))
        return tape.gradient(loss, model.token_encoder.trainable_variables)

    timings = {}
    for name, step in (("whole", whole), ("encoder", encoder)):
        step(batches[0])
        started = time.perf_counter()
        for _ in range(repeats):
            for batch in batches:
                step(batch)
        timings[name] = time.perf_counter() - started
    return timings["encoder"] / timings["whole"]


def ptb(args, _previous):
    from seqapp import config
    from seqapp import runner
    from seqapp import tasks

    definition = config.load_definition(ROOT / "pipelines/bilm_ptb.yaml", overrides=args.set)
    work_dir = Path(args.work_dir) / "ptb"
    started = time.perf_counter()
    results = runner.train(definition, work_dir, verbose=2)
    seconds = time.perf_counter() - started
    training = json.loads((work_dir / "training.json").read_text())
    run = runner.load_run(work_dir)
    inputter = tasks.of(definition).inputter(definition)
    batches = list(inputter.dataset("train", training=False).take(4))
    test = results["test"]
    return {
        "test_ppl_forward": test["perplexity_forward"], "test_ppl_backward": test["perplexity_backward"],
        "test_ppl": test["perplexity"], "test_words": test["words"],
        "validation_ppl_forward": results["validation"]["perplexity_forward"],
        "validation_ppl_backward": results["validation"]["perplexity_backward"],
        "parameters": training["parameters"], "train_seconds": training["wall_seconds"],
        "epochs": training["epochs"], "tokens_per_second": training["tokens_per_second"],
        "encoder_share_of_step": encoder_share(run.model, batches), "train_evaluate_seconds": seconds,
        "history": common.training_history(work_dir), "overrides": args.set,
        "goal": {"test_ppl_forward_le_100": test["perplexity_forward"] <= 100,
                 "parameters_le_10M": training["parameters"] <= 10_000_000,
                 "train_seconds_le_7200": training["wall_seconds"] <= 7200},
    }


def shipped(definition_path, overrides=None, seed=None):
    """A shipped definition, with `overrides` and `seed` when given."""
    from seqapp import config

    overrides = {**(overrides or {}), **({"seed": seed} if seed is not None else {})}
    return config.load_definition(ROOT / definition_path, overrides=overrides)


BILM = {"model.bilm.run": "bilm_imdb.yaml"}  # MR's shipped definition with the IMDB biLM, frozen, concatenated


def imdb(args, _previous):
    from seqapp import config
    from seqapp.training import warm_start

    definition = config.load_definition(ROOT / "pipelines/sentiment_bilm.yaml")
    start = time.perf_counter()
    run_dir = warm_start.PretrainedBiLM(definition).resolve()  # trained here unless the cache has it
    seconds = time.perf_counter() - start
    training = json.loads((Path(run_dir) / "training.json").read_text())
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    return {"run": str(run_dir), "train_seconds": training["wall_seconds"], "epochs": training["epochs"],
            "tokens_per_second": training["tokens_per_second"], "parameters": training["parameters"],
            "test_ppl_forward": metrics["test"]["perplexity_forward"],
            "test_ppl_backward": metrics["test"]["perplexity_backward"],
            "slice": "train[:8000] of IMDB's 25,000 training reviews (pipelines/bilm_imdb.yaml)",
            "seconds_this_run": seconds}


def judged(figures, goal_name, goal):
    """`figures` with the goals judged, once both sides are measured."""
    if "with_bilm" in figures and "without_bilm" in figures:
        figures["goal"] = {"adds_2_points": figures["with_bilm"] - figures["without_bilm"] >= 0.02,
                           goal_name: figures["with_bilm"] >= goal}
    return figures


def mr(args, figures):
    from seqapp import runner

    for name, overrides in (("without_bilm", {}), ("with_bilm", BILM)):
        if name not in args.variants:
            continue
        definition = shipped("pipelines/sentiment_mr_cv.yaml", overrides)
        started = time.perf_counter()
        summary = runner.cross_validate(definition, Path(args.work_dir) / f"mr_{name}", verbose=2)
        figures[name] = summary["accuracy"]["mean"]
        figures[f"{name}_per_fold"] = summary["accuracy"]["per_fold"]
        figures[f"{name}_seconds"] = time.perf_counter() - started
    return judged(figures, "mr_ge_0.82", 0.82)


def sst2(args, figures):
    from seqapp import runner

    for name, path in (("without_bilm", "pipelines/sentiment_bilstm.yaml"),
                       ("with_bilm", "pipelines/sentiment_bilm.yaml")):
        if name not in args.variants:
            continue
        accuracies, seconds = [], []
        for seed in args.seeds:
            definition = shipped(path, seed=seed)
            started = time.perf_counter()
            results = runner.train(definition, Path(args.work_dir) / f"sst2_{name}_{seed}", verbose=2)
            seconds.append(time.perf_counter() - started)
            accuracies.append(results["validation"]["accuracy"])
        figures[name] = sum(accuracies) / len(accuracies)
        figures[f"{name}_per_seed"] = accuracies
        figures[f"{name}_seconds"] = seconds
        figures[f"{name}_seeds"] = args.seeds
    return judged(figures, "sst2_ge_0.88", 0.88)


JOBS = {"ptb": ptb, "imdb": imdb, "mr": mr, "sst2": sst2}
KEYS = {"mr": "mr_cv_accuracy", "sst2": "sst2_dev_accuracy"}  # the names the issue gives the parts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", nargs="+", choices=list(JOBS), default=list(JOBS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the PTB definition (the ptb part)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44], help="SST-2 seeds")
    parser.add_argument("--variants", nargs="+", choices=["without_bilm", "with_bilm"],
                        default=["without_bilm", "with_bilm"], help="the sides mr and sst2 measure")
    parser.add_argument("--work-dir", default=str(ROOT / "runs" / "bench_bilm"))
    parser.add_argument("--out", default=None, help="results file (default bench/results/bilm.json)")
    args = parser.parse_args()
    common.data_dir()
    args.set = {key: parse_value(value) for key, value in (item.split("=", 1) for item in args.set)}
    out = Path(args.out) if args.out else common.RESULTS / "bilm.json"
    kept = json.loads(out.read_text()) if out.exists() else {}
    kept.pop("environment", None)
    for job in args.jobs:
        key = KEYS.get(job, job)
        kept[key] = JOBS[job](args, kept.get(key, {}))
        # The parts (and mr/sst2's sides) are measured by separate runs: each says which run measured it.
        stamp = {name: value for name, value in common.environment().items() if name in ("date", "command")}
        kept[key]["measured"] = ({**kept[key].get("measured", {}), **dict.fromkeys(args.variants, stamp)}
                                 if job in KEYS else stamp)
        print(json.dumps({key: {k: v for k, v in kept[key].items() if k != "history"}}, indent=2), flush=True)
    if args.out:
        out.write_text(json.dumps({**kept, "environment": common.environment()}, indent=2) + "\n")
    else:
        common.write("bilm", kept)


if __name__ == "__main__":
    main()
