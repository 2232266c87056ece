"""`seqapp demo`: the main jobs end to end on the embedded defaults.

Sentiment: prepare MR, learn the WordPiece vocabulary, build the bucketed
pipeline, train a small BiLSTM classifier and export it. Translation: train a
small Transformer on a slice of Multi30k de->en and export it. Then serve both
exports from one embedded TF-Serving-compatible server (`seqapp serve`'s code,
a `--model_config_file` listing both) and query them over REST and gRPC.
"""

from pathlib import Path

from seqapp import config
from seqapp import plots
from seqapp import runner
from seqapp.data import stats
from seqapp.serving import client as clients
from seqapp.serving import server
from seqapp.serving.process import free_port

TASKS = ("sentiment", "translation")
DEFINITIONS = {
    "sentiment": {
        "task": "classification",
        "data": {"dataset": "mr_polarity"},
        "tokenizer": {"vocab_size": 4000},
        "pipeline": {"max_length": 64, "tokens_per_batch": 2048},
        "model": {"family": "bilstm", "embedding_dim": 64, "units": 32, "dropout": 0.5, "pooling": "max"},
        "train": {"epochs": 3, "early_stopping_patience": 1},
    },
    # A slice of Multi30k and a narrow model: minutes on a laptop CPU, so expect rough translations
    # (`pipelines/translation_transformer.yaml` is the full-size setup).
    "translation": {
        "task": "translation",
        "data": {"dataset": "multi30k", "source": "de", "target": "en", "max_train_examples": 10000},
        "tokenizer": {"vocab_size": 4000, "lower_case": False, "normalization_form": "NFC", "shared": True},
        "pipeline": {"max_length": 48, "tokens_per_batch": 2048},
        "model": {"family": "transformer", "embedding_dim": 128, "num_layers": 2, "num_heads": 4, "ffn_dim": 256,
                  "dropout": 0.1, "share_embeddings": True},
        "train": {"epochs": 5, "learning_rate": 0.002, "warmup_steps": 100, "label_smoothing": 0.1},
        "decode": {"beam_size": 4},
    },
}
QUERIES = {
    "sentiment": ["a moving , beautifully acted film that stays with you .",
                  "a tedious , clumsy mess with nothing to say .", "", "Not bad at all 😀"],
    "translation": ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee.",
                    "Eine Frau mit einem roten Hut sitzt auf einer Bank.", ""],
}


def run(seed, out_dir, export_root="saved_models", tasks=TASKS):
    out_dir = Path(out_dir)
    exports = {}
    for task in tasks:
        definition = config.validate({**DEFINITIONS[task], "seed": seed}, source=f"<demo {task}>")
        dataset = definition.data.dataset
        print(f"== {task}: data ({dataset})", flush=True)
        report = stats.collect(dataset, definition)
        print(stats.format_stats(report))
        if "_lengths" in report:
            png = plots.length_histogram(report["_lengths"], out_dir / f"{dataset}_lengths.png", dataset)
            print(f"length histogram: {png}")

        print(f"== {task}: train a {definition.model.family}", flush=True)
        work_dir = out_dir / task
        for split, metrics in runner.train(definition, work_dir, verbose=2).items():
            if task == "translation":
                print(f"{split}: BLEU {metrics['bleu']:.1f}, chrF {metrics['chrf']:.1f} (greedy), "
                      f"perplexity {metrics['perplexity']:.1f}")
            else:
                print(f"{split}: accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}")
        print(f"training curves: {work_dir / 'curves.png'}")

        print(f"== {task}: export for TF Serving", flush=True)
        exports[task] = runner.export(work_dir, Path(export_root) / task)
        print(f"exported {exports[task]}")

    print("== serve (embedded TF-Serving-compatible server on 127.0.0.1)", flush=True)
    model_config = out_dir / "models.config"
    model_config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{task}" base_path: "{path.parent.resolve()}" model_platform: "tensorflow" }}\n'
        for task, path in exports.items()) + "}\n")
    options = server.ServerOptions(port=free_port(), rest_api_port=free_port(),
                                   model_config_file=str(model_config))
    model_server = server.ModelServer(options).start()
    try:
        rest_url = f"http://127.0.0.1:{options.rest_api_port}"
        grpc_target = f"127.0.0.1:{options.port}"
        print(f"REST {rest_url}/v1/models/<name>, gRPC {grpc_target}, models: {', '.join(exports)}")
        print("== query", flush=True)
        for name, client in (("REST", clients.RestClient(rest_url)), ("gRPC", clients.GrpcClient(grpc_target))):
            with client:
                for task in exports:
                    outputs = client.predict(task, {"text": QUERIES[task]})
                    print(f"{name} {task} :predict")
                    _print_outputs(task, QUERIES[task], outputs)
    finally:
        model_server.stop()
    return exports


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _print_outputs(task, texts, outputs):
    if task == "translation":
        for text, translation, score in zip(texts, outputs["translation"], outputs["score"]):
            print(f"  {text!r} -> {_text(translation)!r} (score {float(score):.2f})")
        return
    for text, label, probabilities in zip(texts, outputs["label"], outputs["probabilities"]):
        print(f"  {_text(label):>4} {[round(float(p), 3) for p in probabilities]}  {text!r}")
