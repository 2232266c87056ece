"""`seqapp` command line: parses arguments and calls library functions, nothing more."""

import argparse
import json
import os
import sys
from pathlib import Path

from seqapp.errors import SeqappError


def _data_list(args):
    from seqapp import datasets
    from seqapp import settings

    print(f"{'name':<18}{'task':<20}source")
    for name in datasets.DATASETS:
        local = settings.local_dataset_dir(name)
        if getattr(datasets.DATASETS[name], "GENERATED", False):
            where = "generated (no download)"
        else:
            where = f"local {local}" if local else f"download ({datasets.builder(name).info.homepage})"
        print(f"{name:<18}{datasets.TASKS[name]:<20}{where}")


def _data_prepare(args):
    from seqapp import datasets

    builder = datasets.prepare(args.name)
    for split, info in builder.info.splits.items():
        print(f"{split:<12} {info.num_examples:>8d} examples")
    print(f"prepared in {builder.data_dir}")


def _data_stats(args):
    from seqapp import config
    from seqapp import plots
    from seqapp.data import stats

    definition = None
    if args.pipeline:
        definition = config.load_definition(args.pipeline, overrides={"seed": args.seed} if args.seed is not None else None)
    elif args.seed is not None:
        definition = stats.definition_for_dataset(args.name)
        definition = definition and definition.model_copy(update={"seed": args.seed})
    report = stats.collect(args.name, definition)
    print(stats.format_stats(report))
    if "_lengths" in report:
        png = plots.length_histogram(report["_lengths"], Path(args.out) / f"{args.name.replace('/', '_')}_lengths.png", args.name)
        print(f"length histogram: {png}")
    if args.json:
        Path(args.json).write_text(json.dumps({k: v for k, v in report.items() if not k.startswith("_")}, indent=2))


def parse_sets(items):
    """`--set section.key=value` flags as `{"section.key": value}`, values parsed as YAML (the bench
    scripts take the same flags)."""
    import yaml

    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SeqappError(f"--set {item!r}: expected section.key=value")
        overrides[key] = yaml.safe_load(value)
    return overrides


def _overrides(args):
    """`--set` flags (`parse_sets`) plus `--seed`."""
    overrides = parse_sets(args.set)
    if args.seed is not None:
        overrides["seed"] = args.seed
    return overrides


def _train(args):
    from seqapp import config
    from seqapp import runner
    from seqapp import tasks

    definition = config.load_definition(args.pipeline, overrides=_overrides(args))
    task = tasks.of(definition)
    work_dir = Path(args.work_dir or Path("runs") / Path(args.pipeline).stem)
    if task.folds(definition) > 1:
        summary = runner.cross_validate(definition, work_dir)
        print(f"{task.folds(definition)}-fold {task.format_summary(summary)}")
    else:
        print(task.format_metrics(runner.train(definition, work_dir), work_dir))
    print(f"run folder: {work_dir}")


def _tune(args):
    from seqapp.tuning import distributed
    from seqapp.tuning import search
    from seqapp.tuning.tuner import parse_duration

    work_dir = Path(args.work_dir or Path("tuning") / Path(args.pipeline).stem)
    options = {"tuner": args.tuner, "max_trials": args.max_trials, "seed": args.seed,
               "time_budget": parse_duration(args.time_budget) if args.time_budget else None,
               "worker_deadline": parse_duration(args.worker_deadline),
               "executions_per_trial": args.executions_per_trial}
    if args.workers:
        text = distributed.tune_locally(args.pipeline, work_dir, workers=args.workers, **options)
    else:
        distributed.take_role(chief=args.chief, worker=args.worker)
        text = search.tune(args.pipeline, work_dir, **options)
    if text is not None:
        print(text)
        print(f"search folder: {work_dir} (results.txt, results.png, hparams/, best.yaml)")


def _export(args):
    from seqapp import runner
    from seqapp import tasks

    name = args.name or tasks.of(runner.run_definition(args.work_dir)).export_name
    path = runner.export(args.work_dir, Path(args.export_root) / name, args.version)
    print(f"exported {path}")


def _eval(args):
    from seqapp import runner
    from seqapp import tasks

    run = runner.load_run(args.work_dir)
    task = tasks.of(run.definition)
    options = {"beam_size": args.beam_size}
    files = {name: getattr(args, name) for name in ("data", "images", "source", "reference", "output")
             if getattr(args, name) is not None}
    if files:
        if args.split:
            raise SeqappError("give --split or files to evaluate on, not both")
        print(task.format_metrics(task.evaluate_files(run, files, **options), args.work_dir))
        return
    splits = args.split or ["test"]
    results = task.evaluate(run, splits, **options)
    missing = [split for split in splits if split not in results]
    if missing:
        raise SeqappError(f"the run's data has no (labelled) split {', '.join(missing)}")
    print(task.format_metrics({split: results[split] for split in splits}, args.work_dir))


def _explain(args):
    from seqapp import runner
    from seqapp import tasks

    run = runner.load_run(args.work_dir)
    answer, png = tasks.of(run.definition).explain(run, args.out, text=args.text, image=args.image,
                                                   beam_size=args.beam_size)
    print(answer)
    print(f"attention: {png}")


def _demo(args):
    from seqapp import demo

    demo.run(seed=args.seed if args.seed is not None else 42, out_dir=Path(args.out),
             tasks=(args.task,) if args.task else None, small=args.small)


def _flag_bool(value):
    """tensorflow_model_server's boolean flag values: true/false (also 1/0, yes/no)."""
    lowered = str(value).strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {value!r}")


def _serve(args):
    from seqapp.serving import server

    options = server.ServerOptions(
        port=args.port, rest_api_port=args.rest_api_port, host=args.host, rest_api_host=args.rest_api_host,
        model_name=args.model_name, model_base_path=args.model_base_path or "",
        model_config_file=args.model_config_file or "",
        model_config_file_poll_wait_seconds=args.model_config_file_poll_wait_seconds,
        file_system_poll_wait_seconds=args.file_system_poll_wait_seconds,
        rest_api_timeout_in_ms=args.rest_api_timeout_in_ms, enable_model_warmup=args.enable_model_warmup,
        enable_signature_method_name_check=args.enable_signature_method_name_check,
        max_request_bytes=args.max_request_bytes, rest_api_num_threads=args.rest_api_num_threads,
        grpc_max_threads=args.grpc_max_threads, enable_batching=args.enable_batching,
        batching_parameters_file=args.batching_parameters_file or "",
        monitoring_config_file=args.monitoring_config_file or "",
    )
    server.serve(options)


def _predict(args):
    from seqapp.serving import client as clients
    from seqapp.serving import tensors

    if args.image and args.texts:
        raise SeqappError("give TEXT arguments or --image, not both")
    if args.image:
        values = []
        for path in args.image:
            try:
                values.append(Path(path).read_bytes())
            except OSError as error:
                raise SeqappError(f"--image {path}: {error.strerror or error}") from None
    elif args.texts:
        values = list(args.texts)
    else:
        raise SeqappError("nothing to send: give TEXT arguments or --image PATH")
    client = clients.RestClient(args.rest) if args.rest else clients.GrpcClient(args.grpc)
    with client:
        inputs = {args.input: values} if args.input else values
        outputs = client.predict(args.model, inputs, signature_name=args.signature, version=args.version,
                                 label=args.label)
    print(json.dumps({name: tensors.array_to_json(value, name) for name, value in outputs.items()},
                     ensure_ascii=False))


def _positive_int(value):
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {value!r}")
    return number


def build_parser():
    parser = argparse.ArgumentParser(
        prog="seqapp", description="Train, tune and serve sequence models on TensorFlow."
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (overrides the pipeline definition's)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="list, prepare and inspect datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    data_commands.add_parser("list", help="built-in datasets, their task and where they are read from").set_defaults(
        func=_data_list
    )
    prepare = data_commands.add_parser("prepare", help="prepare a dataset (read locally or download)")
    prepare.add_argument("name")
    prepare.set_defaults(func=_data_prepare)
    stats = data_commands.add_parser(
        "stats", help="counts per split, length histogram, vocabulary size, padding efficiency"
    )
    stats.add_argument("name")
    stats.add_argument("--pipeline", help="pipeline definition (YAML) whose tokenizer and batching to measure")
    stats.add_argument("--out", default="runs/stats", help="folder for the histogram PNG (default: runs/stats)")
    stats.add_argument("--json", help="also write the figures to this JSON file")
    stats.set_defaults(func=_data_stats)

    train = commands.add_parser("train", help="train a model from a pipeline definition")
    train.add_argument("pipeline", help="pipeline definition (YAML), e.g. pipelines/sentiment_bilstm.yaml")
    train.add_argument("--work-dir", help="run folder (default: runs/<pipeline name>)")
    train.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                       help="override a definition value, e.g. --set model.family=tcn (repeatable)")
    train.set_defaults(func=_train)

    tune = commands.add_parser("tune", help="search the `tune` space of a pipeline definition (KerasTuner)")
    tune.add_argument("pipeline")
    tune.add_argument("--tuner", choices=("random", "bayesian", "hyperband"), default="random")
    tune.add_argument("--max-trials", type=int, default=10, help="trials in all; raise it to extend a search")
    tune.add_argument("--time-budget", help="start no trial after this long (90s, 30m, 2h)")
    tune.add_argument("--work-dir", help="the search's folder (default tuning/<pipeline>); run again to continue")
    tune.add_argument("--seed", type=int, default=0, help="the search's seed (trials keep the definition's)")
    tune.add_argument("--executions-per-trial", type=int, default=1,
                      help="runs of each trial, at the definition's seed, seed+1, ...; the trial scores their mean")
    role = tune.add_mutually_exclusive_group()
    role.add_argument("--chief", action="store_true",
                      help="serve the oracle at KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT to workers")
    role.add_argument("--worker", action="store_true",
                      help="train trials of the chief at KERASTUNER_ORACLE_IP:PORT as KERASTUNER_TUNER_ID")
    role.add_argument("--workers", type=int, help="run a chief and this many workers on this machine")
    tune.add_argument("--worker-deadline", default="10m",
                      help="how long the chief waits for a silent worker before queuing its trial again "
                           "(workers beat every quarter of it, at most every minute, while they train)")
    tune.set_defaults(func=_tune)

    export = commands.add_parser("export", help="export a trained run as a TF Serving SavedModel")
    export.add_argument("--work-dir", required=True, help="the run folder `seqapp train` wrote")
    export.add_argument("--name", help="model name (default: sentiment or translation, by the run's task)")
    export.add_argument("--export-root", default="saved_models", help="export root (default: saved_models)")
    export.add_argument("--version", type=int, help="integer version (default: one more than the latest)")
    export.set_defaults(func=_export)

    evaluate = commands.add_parser("eval", help="the metrics of a trained run on a split or on your files")
    evaluate.add_argument("--work-dir", required=True, help="the run folder `seqapp train` wrote")
    evaluate.add_argument("--split", action="append", help="dataset split(s) to evaluate (default: test)")
    evaluate.add_argument("--data", help="classification: a labelled CSV/TSV/JSONL file with the run's text and "
                                         "label columns; captioning: a captions file (instead of --split)")
    evaluate.add_argument("--images", help="captioning: the folder of the images --data names (with --data: a "
                                           "captions TSV or COCO-style JSON)")
    evaluate.add_argument("--source", help="translation: a file of source sentences, one per line (instead of "
                                           "--split)")
    evaluate.add_argument("--reference", help="translation: the reference translations, line-aligned with --source")
    evaluate.add_argument("--output", help="translation: write the translations of --source here")
    evaluate.add_argument("--beam-size", type=_positive_int,
                          help="translation: beam size (default: the definition's; 1 = greedy)")
    evaluate.set_defaults(func=_eval)

    explain = commands.add_parser("explain", help="translate a sentence or caption an image and draw the "
                                                  "attention behind each word (PNG)")
    explain.add_argument("text", nargs="?", help="translation: the source sentence")
    explain.add_argument("--image", help="captioning: the image file (JPEG, PNG, GIF or BMP)")
    explain.add_argument("--work-dir", required=True, help="the run folder `seqapp train` wrote")
    explain.add_argument("--out", default="attention.png", help="PNG path (default: attention.png)")
    explain.add_argument("--beam-size", type=_positive_int, help="beam size (default: the definition's)")
    explain.set_defaults(func=_explain)

    demo = commands.add_parser("demo", help="every job end to end: data, train, export, serve, query")
    demo.add_argument("--out", default="runs/demo", help="working folder (default: runs/demo)")
    demo.add_argument("--task", help="run one task's job only, e.g. classification or translation "
                                     "(default: every task's)")
    demo.add_argument("--small", action="store_true",
                      help="tiny data and models: the whole path in a minute or two, answers meaningless")
    demo.set_defaults(func=_demo)

    serve = commands.add_parser(
        "serve", help="serve SavedModels over TF Serving's REST and gRPC APIs (like tensorflow_model_server)")
    serve.add_argument("--port", type=int, default=8500, help="gRPC port (default: 8500; 0 = no gRPC)")
    serve.add_argument("--rest_api_port", type=int, default=0, help="REST port (default: 0 = no REST)")
    serve.add_argument("--host", default="127.0.0.1", help="gRPC bind address (default: 127.0.0.1)")
    serve.add_argument("--rest_api_host", default="127.0.0.1", help="REST bind address (default: 127.0.0.1)")
    serve.add_argument("--model_name", default="default", help="model name with --model_base_path (default: default)")
    serve.add_argument("--model_base_path", help="folder holding the model's integer-named versions")
    serve.add_argument("--model_config_file", help="ModelServerConfig text proto (several models, policies, labels)")
    serve.add_argument("--model_config_file_poll_wait_seconds", type=float, default=0,
                       help="re-read --model_config_file this often (default: 0 = never)")
    serve.add_argument("--file_system_poll_wait_seconds", type=float, default=1,
                       help="poll base paths for new versions this often (default: 1; 0 = once at start)")
    serve.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                       help="REST request deadline in ms (default: 30000)")
    serve.add_argument("--enable_model_warmup", type=_flag_bool, nargs="?", const=True, default=True,
                       metavar="true|false",
                       help="replay assets.extra/tf_serving_warmup_requests at load (default: true)")
    serve.add_argument("--enable_signature_method_name_check", type=_flag_bool, nargs="?", const=True, default=False,
                       metavar="true|false",
                       help="Classify/Regress only on signatures with the classify/regress method name "
                            "(default: false, as in TF Serving; TF2 names every signature predict)")
    serve.add_argument("--max_request_bytes", type=int, default=64 * 1024 * 1024,
                       help="largest accepted request body / gRPC message (default: 64 MiB)")
    serve.add_argument("--enable_batching", type=_flag_bool, nargs="?", const=True, default=True,
                       metavar="true|false",
                       help="merge concurrent requests to a model version and signature into one run "
                            "(default: true)")
    serve.add_argument("--batching_parameters_file",
                       help="BatchingParameters text proto (default: the values of serving/batching.config)")
    serve.add_argument("--monitoring_config_file",
                       help="MonitoringConfig text proto (default: Prometheus metrics on the REST port at "
                            "/monitoring/prometheus/metrics, as serving/monitoring.config)")
    serve.add_argument("--rest_api_num_threads", type=int, default=64,
                       help="threads for the REST calls that block: status, metadata, classify, regress, predict "
                            "without batching (default: 64)")
    serve.add_argument("--grpc_max_threads", type=int, default=64,
                       help="threads for the gRPC calls that block: all but Predict, and Predict without batching "
                            "(default: 64)")
    serve.set_defaults(func=_serve)

    predict = commands.add_parser("predict", help="send a Predict request to a TF Serving compatible server")
    predict.add_argument("texts", nargs="*", metavar="TEXT", help="texts to send as one batch")
    predict.add_argument("--model", required=True, help="model name")
    target = predict.add_mutually_exclusive_group(required=True)
    target.add_argument("--rest", metavar="URL", help="REST endpoint, e.g. http://127.0.0.1:8501")
    target.add_argument("--grpc", metavar="HOST:PORT", help="gRPC endpoint, e.g. 127.0.0.1:8500")
    predict.add_argument("--signature", default="serving_default", help="signature (default: serving_default)")
    version = predict.add_mutually_exclusive_group()
    version.add_argument("--version", type=int, help="model version (default: the latest)")
    version.add_argument("--label", help="version label")
    predict.add_argument("--input", help="input name (default: the signature's only input)")
    predict.add_argument("--image", action="append", metavar="PATH",
                         help="send this file's bytes (b64 over REST, DT_STRING over gRPC); repeatable")
    predict.set_defaults(func=_predict)
    return parser


def main(argv=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except SeqappError as error:
        print(f"seqapp: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
