"""Translation on Multi30k de->en (test_2016_flickr): BLEU/chrF, training cost, decode speed.

Trains the Transformer (`pipelines/translation_transformer.yaml`) and the
LSTM-attention baseline (`pipelines/translation_lstm_attention.yaml`) with
`runner.train` for the epochs the pipelines say (a 2-core CPU budget), then for each: sacreBLEU BLEU and chrF (cased, detokenized) on
test_2016_flickr with greedy search and beam 4, parameter count, training wall
time and tokens/s. Decode speed: sentences/s of beam 4 at batch 1 and batch 32,
with the incremental cache and recomputing the prefix at every step, through
the same `Translator.translate` graph the export serves. Partial results are
written after every model, so an interrupted run still leaves its figures.

    SEQAPP_DATA_DIR=../shared/data python bench/translation.py [--reuse-runs]

`--reuse-runs` skips training for a model whose run folder already finished
(its `training.json` exists) and measures that run.
"""

import argparse
import json
import shutil
import time
from pathlib import Path

import tensorflow as tf

from seqapp import config
from seqapp import evaluation
from seqapp import runner
from seqapp import tasks

import common

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = {"transformer": ROOT / "pipelines" / "translation_transformer.yaml",
             "lstm_attention": ROOT / "pipelines" / "translation_lstm_attention.yaml"}
PUBLISHED = {
    "transformer": "9M-param Transformer, 36.5 lowercased tokenized BLEU on test2016 de->en",
    "lstm_attention": "GRU-attention (Caglayan et al.) 37.3 lowercased en->de",
}
GOALS = {"transformer_bleu": 35.0, "lstm_attention_bleu": 28.0, "cache_speedup": 3.0}


def train_or_reuse(family, args):
    work_dir = Path(args.work_root) / family
    if not (args.reuse_runs and (work_dir / "training.json").exists()):
        shutil.rmtree(work_dir, ignore_errors=True)
        overrides = {"seed": args.seed, **({"train.epochs": args.epochs} if args.epochs else {})}
        runner.train(config.load_definition(PIPELINES[family], overrides), work_dir, verbose=2)
    return work_dir


def quality(work_dir):
    run = runner.load_run(work_dir)
    translator = run.translator
    inputter = tasks.of(run.definition).inputter(run.definition, tokenizers=run.tokenizers)
    sources, references = inputter.texts("test", "source"), inputter.texts("test", "target")
    figures = {"test_sentences": len(sources)}
    for name, beam_size in (("greedy", 1), ("beam4", 4)):
        started = time.perf_counter()
        hypotheses = evaluation.translate_all(translator, sources, beam_size=beam_size)
        metrics = evaluation.translation_metrics(hypotheses, references)
        figures.update({f"bleu_{name}": metrics["bleu"], f"chrf_{name}": metrics["chrf"],
                        f"{name}_test_seconds": time.perf_counter() - started})
        (work_dir / f"test_{name}.en").write_text("".join(f"{h}\n" for h in hypotheses), encoding="utf-8")
    return figures, translator, sources


def decode_speed(translator, sources, *, batch_size, cached, seconds):
    """Sentences/s of beam 4 over consecutive test sentences, for at least `seconds` (after one warm call)."""
    translate = evaluation.translate_function(translator, beam_size=4, cached=cached)
    batches = [tf.constant(sources[i:i + batch_size]) for i in range(0, len(sources) - batch_size + 1, batch_size)]
    return common.throughput(translate, batches, batch_size=batch_size, seconds=seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, help="epochs for every model (default: each pipeline's own)")
    parser.add_argument("--work-root", default=str(ROOT / "runs" / "bench_translation"))
    parser.add_argument("--reuse-runs", action="store_true")
    parser.add_argument("--speed-seconds", type=float, default=30.0, help="time per decode-speed cell")
    parser.add_argument("--families", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    args = parser.parse_args()
    common.data_dir()

    results = {"multi30k_test2016": {}, "decode": {}, "training": {}}
    previous = common.RESULTS / "translation.json"
    if set(args.families) != set(PIPELINES) and previous.exists():
        # A run of some families keeps the other families' figures from the last run.
        last = json.loads(previous.read_text())
        results = {key: last[key] for key in results}
        results["other_families_from"] = last.get("other_families_from", last["environment"])
    results.update({"published": PUBLISHED, "goals": GOALS,
                    "notes": "BLEU/chrF: sacreBLEU 13a, cased, detokenized, test_2016_flickr (1,000 sentences); "
                             "decode speeds: beam 4, sentences/s, in-process graph (what the export runs); "
                             "training tokens_per_second counts the longer side of each pair"})
    for family in args.families:
        work_dir = train_or_reuse(family, args)
        results["training"][family] = json.loads((work_dir / "training.json").read_text())
        figures, translator, sources = quality(work_dir)
        results["multi30k_test2016"][family] = figures
        print(family, json.dumps(figures), flush=True)
        speeds = {}
        for batch_size in (1, 32):
            for cached in (True, False):
                key = f"beam4_{'cached' if cached else 'uncached'}_batch{batch_size}_sents_per_s"
                speeds[key] = decode_speed(translator, sources, batch_size=batch_size, cached=cached,
                                           seconds=args.speed_seconds)
                print(family, key, round(speeds[key], 2), flush=True)
        results["decode"][family] = speeds
        if family == "transformer":  # the headline figures the issue asks for
            results["decode"].update({
                "beam4_cached_sents_per_s": speeds["beam4_cached_batch32_sents_per_s"],
                "beam4_uncached_sents_per_s": speeds["beam4_uncached_batch32_sents_per_s"],
                "cache_speedup_batch1": speeds["beam4_cached_batch1_sents_per_s"]
                / speeds["beam4_uncached_batch1_sents_per_s"],
                "cache_speedup_batch32": speeds["beam4_cached_batch32_sents_per_s"]
                / speeds["beam4_uncached_batch32_sents_per_s"],
            })
        common.write("translation", results)


if __name__ == "__main__":
    main()
