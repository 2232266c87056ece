"""`seqapp demo`: every task's job end to end on the embedded defaults.

For each registered task (`seqapp.tasks`): prepare its data and show its
statistics, train the task's demo model (classification: a small BiLSTM on MR,
the sentiment job; translation: a small Transformer on a slice of Multi30k
de->en) and export it. Then serve every export from one embedded
TF-Serving-compatible server (`seqapp serve`'s code, a `--model_config_file`
listing them) and query each over REST and gRPC. `small=True` shrinks data and
models so the whole path runs in a minute or two (what the tests run).
"""

from pathlib import Path

from seqapp import config
from seqapp import plots
from seqapp import runner
from seqapp import tasks as registry
from seqapp.data import stats
from seqapp.serving import client as clients
from seqapp.serving import server
from seqapp.serving.process import free_port


def run(seed, out_dir, export_root="saved_models", tasks=None, small=False):
    """Runs the demo; returns `{task name: exported version path}`.

    Args:
        seed: the definitions' seed.
        out_dir: where run folders, statistics and the server's config go.
        export_root: where the exports go (`<export_root>/<export name>/<version>`).
        tasks: task names to run (default: every registered task).
        small: tiny data and models (seconds of training; answers are meaningless).
    """
    out_dir = Path(out_dir)
    chosen = [registry.get(name) for name in tasks] if tasks else list(registry.REGISTRY.values())
    exports = {}
    for task in chosen:
        definition = config.validate({**task.demo_definition(small), "seed": seed}, source=f"<demo {task.name}>")
        dataset = definition.data.dataset
        print(f"== {task.name}: data ({dataset})", flush=True)
        report = stats.collect(dataset, definition)
        print(stats.format_stats(report))
        png = plots.length_histogram(report["_lengths"], out_dir / f"{dataset}_lengths.png", dataset)
        print(f"length histogram: {png}")

        print(f"== {task.name}: train a {definition.model.family}", flush=True)
        work_dir = out_dir / task.name
        print(task.format_metrics(runner.train(definition, work_dir, verbose=2), work_dir))
        print(f"training curves: {work_dir / 'curves.png'}")

        print(f"== {task.name}: export for TF Serving as {task.export_name!r}", flush=True)
        exports[task.name] = runner.export(work_dir, Path(export_root) / task.export_name)
        print(f"exported {exports[task.name]}")

    print("== serve (embedded TF-Serving-compatible server on 127.0.0.1)", flush=True)
    model_config = out_dir / "models.config"
    model_config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{registry.get(name).export_name}" base_path: "{path.parent.resolve()}" '
        f'model_platform: "tensorflow" }}\n' for name, path in exports.items()) + "}\n")
    options = server.ServerOptions(port=free_port(), rest_api_port=free_port(), model_config_file=str(model_config))
    model_server = server.ModelServer(options).start()
    try:
        rest_url = f"http://127.0.0.1:{options.rest_api_port}"
        grpc_target = f"127.0.0.1:{options.port}"
        print(f"REST {rest_url}/v1/models/<name>, gRPC {grpc_target}, models: "
              f"{', '.join(task.export_name for task in chosen)}")
        print("== query", flush=True)
        for protocol, client in (("REST", clients.RestClient(rest_url)), ("gRPC", clients.GrpcClient(grpc_target))):
            with client:
                for task in chosen:
                    inputs = task.demo_inputs()
                    outputs = client.predict(task.export_name, inputs)
                    print(f"{protocol} {task.export_name} :predict")
                    print(task.format_outputs(inputs, outputs))
    finally:
        model_server.stop()
    return exports
