"""Captioning on shapes_captions: exact match, slot accuracy, held-out pairs, BLEU-4, cost, speed.

Trains the Transformer captioner (`pipelines/captioning_transformer.yaml`) and
Show, Attend and Tell (`pipelines/captioning_lstm_attention.yaml`) with
`runner.train` on the 20,000 generated training scenes, exports each, and
measures on `test` (the training distribution) and `test_compositional` (every
image holds a colour-shape pair never seen in training): BLEU-4 and CIDEr-D
against every caption the grammar allows, exact match, slot accuracy (the
caption names exactly the scene's objects and only true relations) and
held-out-pair recall, all decoded greedily through the exported SavedModel from
PNG bytes (what a TF Serving client sends); parameters, training wall time, and
captions/s of the export at batch 1 and 32. Partial results are written after
every model, so an interrupted run still leaves its figures.

    SEQAPP_DATA_DIR=../shared/data python bench/captioning.py [--reuse-runs] [--families transformer]

`--reuse-runs` skips training for a model whose run folder already finished
(its `training.json` exists) and measures that run. A variant of one pipeline
is measured under its own key, beside the others:

    python bench/captioning.py --families lstm_attention --set model.encoder_norm=batch \
        --name lstm_attention_batchnorm
"""

import argparse
import io
import json
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from seqapp import cli
from seqapp import config
from seqapp import evaluation
from seqapp import runner
from seqapp import tasks
from seqapp.datasets.shapes_captions import scenes as shapes

import common

ROOT = Path(__file__).resolve().parent.parent
PIPELINES = {"transformer": ROOT / "pipelines" / "captioning_transformer.yaml",
             "lstm_attention": ROOT / "pipelines" / "captioning_lstm_attention.yaml"}
GOALS = {"exact_match_test": 0.95, "exact_match_test_compositional": 0.80, "train_seconds": 1800}
SPLITS = ("test", "test_compositional")


def train_or_reuse(family, name, args):
    work_dir = Path(args.work_root) / name
    if not (args.reuse_runs and (work_dir / "training.json").exists()):
        shutil.rmtree(work_dir, ignore_errors=True)
        overrides = {"seed": args.seed, **({"train.epochs": args.epochs} if args.epochs else {}),
                     **cli.parse_sets(args.set)}
        runner.train(config.load_definition(PIPELINES[family], overrides), work_dir, verbose=2)
    return work_dir


def png(picture):
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def split_images(run, split):
    """`(PNG bytes, references, scenes)` of every image of a split."""
    inputter = tasks.of(run.definition).run_inputter(run)
    pictures, references, scenes = [], [], []
    for example in inputter.examples(split).as_numpy_iterator():
        pictures.append(png(example["image"]))
        references.append([caption.decode() for caption in example["captions"]])
        scenes.append(shapes.scene_from_json(example["scene"].decode()))
    return pictures, references, scenes


def quality(serve, run):
    """Caption metrics of each split, captioned by the export from PNG bytes in batches of 64."""
    figures = {}
    for split in SPLITS:
        pictures, references, scenes = split_images(run, split)
        hypotheses = []
        for start in range(0, len(pictures), 64):
            outputs = serve(image_bytes=tf.constant(pictures[start:start + 64]))
            hypotheses += [caption.decode() for caption in outputs["caption"].numpy()]
        metrics = evaluation.caption_metrics(hypotheses, references, scenes)
        figures[split] = {key: metrics[key] for key in ("bleu4", "cider_d", "exact_match", "slot_accuracy",
                                                        "heldout_pair_recall", "images")}
        # Where the errors are: exact match of the scenes of one, two and three objects.
        figures[split]["exact_match_by_objects"] = {
            str(count): float(np.mean([evaluation.normalize_caption(h) in map(evaluation.normalize_caption, r)
                                       for h, r, s in zip(hypotheses, references, scenes)
                                       if len(s.objects) == count]))
            for count in sorted({len(s.objects) for s in scenes})}
        figures[split]["examples"] = [{"caption": h, "references": r[:2]} for h, r in
                                      list(zip(hypotheses, references))[:5]]
        print(split, json.dumps({k: v for k, v in figures[split].items() if k != "examples"}), flush=True)
    return figures


def speed(serve, pictures, *, batch_size, seconds):
    """Captions/s of the export over consecutive images, for at least `seconds` (after one warm call)."""
    batches = [tf.constant(pictures[i:i + batch_size]) for i in range(0, len(pictures) - batch_size + 1, batch_size)]
    return common.throughput(lambda batch: serve(image_bytes=batch), batches, batch_size=batch_size, seconds=seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, help="epochs for every model (default: the pipelines')")
    parser.add_argument("--work-root", default=str(ROOT / "runs" / "bench_captioning"))
    parser.add_argument("--reuse-runs", action="store_true")
    parser.add_argument("--speed-seconds", type=float, default=20.0, help="time per captions/s cell")
    parser.add_argument("--families", nargs="+", default=list(PIPELINES), choices=list(PIPELINES))
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override a value of the pipeline, parsed as YAML (one family only; give --name)")
    parser.add_argument("--name", help="the key (and run folder) of the figures (default: the family)")
    args = parser.parse_args()
    if (args.set or args.name) and (len(args.families) != 1 or not args.name):
        parser.error("--set and --name measure a variant of one family: give one --families and a --name")
    common.data_dir()

    results = {}
    previous = common.RESULTS / "captioning.json"
    if previous.exists():  # a run of some models keeps the others' figures
        last = json.loads(previous.read_text())
        results = {key: value for key, value in last.items() if key not in ("goals", "notes", "environment")}
    results.update({"goals": GOALS,
                    "notes": "shapes_captions default config (train 20,000 images); greedy decoding through the "
                             "exported serving_default from PNG bytes; fractions in [0, 1] (CIDEr-D 0-10); "
                             "captions_per_s: the export called in-process at batch 1 and 32"})
    for family in args.families:
        name = args.name or family
        work_dir = train_or_reuse(family, name, args)
        training = json.loads((work_dir / "training.json").read_text())
        export = runner.export(work_dir, Path(args.work_root) / "saved_models" / name)
        run = runner.load_run(work_dir)
        serve = tf.saved_model.load(str(export)).signatures["serving_default"]
        figures = quality(serve, run)
        pictures = split_images(run, "test")[0]
        figures.update({
            "overrides": args.set, "parameters": training["parameters"], "train_seconds": training["wall_seconds"],
            "epochs": training["epochs"], "export": str(export),
            "captions_per_s": {str(b): speed(serve, pictures, batch_size=b, seconds=args.speed_seconds)
                               for b in (1, 32)},
        })
        print(name, json.dumps({k: figures[k] for k in ("parameters", "train_seconds", "captions_per_s")}),
              flush=True)
        results[name] = figures
        common.write("captioning", results)


if __name__ == "__main__":
    main()
