"""The Task interface: every registered task trains, evaluates, exports and serves the same way,
and nothing outside `seqapp/tasks/` asks which task it holds."""

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

from seqapp import config
from seqapp import exporters
from seqapp import runner
from seqapp import tasks

PACKAGE = Path(__file__).resolve().parents[1] / "seqapp"
_NAMES = "|".join(map(re.escape, tasks.REGISTRY))
# `task ==`, `!= task`, and a task's name compared or looked up as a literal ("translation" in ...).
BRANCHES = [
    re.compile(r"\btask\s*(==|!=)"),
    re.compile(r"(==|!=)\s*[\w.]*\btask\b"),
    re.compile(rf"(==|!=|\bin\b|\bnot in\b)\s*[(\[{{]?\s*[\"']({_NAMES})[\"']"),
    re.compile(rf"[\"']({_NAMES})[\"']\s*(==|!=|\bin\b|\bnot in\b)"),
]


def test_no_task_branches_outside_the_tasks_package():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PACKAGE / "tasks" in path.parents:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if any(pattern.search(line) for pattern in BRANCHES):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{number}: {line.strip()}")
    assert not found, "task branches outside seqapp/tasks/:\n" + "\n".join(found)


def test_the_grep_catches_a_branch():
    lines = ['if definition.task == "translation":', "if task != other.task:",
             'family = x if name in ("classification", "y") else z', 'if "translation" == kind:']
    assert all(any(p.search(line) for p in BRANCHES) for line in lines)
    assert not any(p.search('task = tasks.of(definition)') for p in BRANCHES)


def test_models_know_nothing_of_the_config():
    for path in (PACKAGE / "models").glob("*.py"):
        assert "seqapp.config" not in path.read_text(), path
        assert "from seqapp import config" not in path.read_text(), path


FRESH_PROCESS = """
import json, sys
import tensorflow as tf
import tensorflow_text  # registers the tf-text ops the graph uses
from tensorflow_serving.apis import prediction_log_pb2

def as_bytes(values):  # strings came as latin-1 text (JSON has no bytes); numbers as they are
    if isinstance(values, list):
        return [as_bytes(value) for value in values]
    return values.encode("latin-1") if isinstance(values, str) else values

path, examples = sys.argv[1], json.loads(sys.argv[2])
loaded = tf.saved_model.load(path)
answers = {}
for name, inputs in examples.items():
    outputs = loaded.signatures[name](**{key: tf.constant(as_bytes(values)) for key, values in inputs.items()})
    answers[name] = {key: list(value.shape) for key, value in outputs.items()}
replayed = []
for record in tf.data.TFRecordDataset(path + "/assets.extra/tf_serving_warmup_requests"):
    request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
    outputs = loaded.signatures[request.model_spec.signature_name](
        **{key: tf.constant(tf.make_ndarray(value)) for key, value in request.inputs.items()})
    replayed.append({key: list(value.shape) for key, value in outputs.items()})
print(json.dumps({"seqapp_modules": sorted(m for m in sys.modules if m.split(".")[0] == "seqapp"),
                  "answers": answers, "replayed": replayed}))
"""


@pytest.fixture(scope="module")
def demo_small(tmp_path_factory, seqapp_cache_dir, shared_data_dir):
    """`seqapp demo --small` run once: `(folder, {task: export path}, what it printed)`. Every task's
    small demo definition is trained, evaluated, exported, served and queried."""
    from seqapp import demo

    tmp_path = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exports = demo.run(seed=3, out_dir=tmp_path / "demo", export_root=tmp_path / "saved_models", small=True)
    return tmp_path, exports, printed.getvalue()


@pytest.fixture(params=sorted(tasks.REGISTRY))
def exported(request, demo_small):
    """`(task, run folder, export path)` of each task's run in the small demo."""
    tmp_path, exports, _ = demo_small
    return tasks.get(request.param), tmp_path / "demo" / request.param, exports[request.param]


def test_a_task_trains_evaluates_and_reports(exported):
    task, work_dir, _ = exported
    stored = json.loads((work_dir / "metrics.json").read_text())
    assert {"validation", "test"} <= set(stored)
    assert task.format_metrics({split: stored[split] for split in ("validation", "test")}, work_dir).count("\n") >= 1
    training = json.loads((work_dir / "training.json").read_text())
    assert training["epochs"] == 1 and training["fold"] is None
    again = runner.evaluate(work_dir, ["validation"])
    assert set(again) == {"validation"}
    assert json.loads((work_dir / "metrics.json").read_text())["validation"] == again["validation"]  # merged
    assert json.loads((work_dir / "metrics.json").read_text())["test"] == stored["test"]  # kept


def test_a_task_export_answers_in_a_fresh_process(exported):
    task, work_dir, path = exported
    assert exporters.check_ops(path)  # only ops TF Serving runs
    card = json.loads((path / exporters.MODEL_CARD_FILE).read_text())
    assert card["task"] == task.name
    run = runner.load_run(work_dir)
    examples = {name: {key: _as_text(values) for key, values in inputs.items()}
                for name, inputs in task.example_inputs(run).items()}
    assert set(examples) == set(card["signatures"])  # every signature has an example request
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(path), json.dumps(examples)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["seqapp_modules"] == []
    for name, shapes in served["answers"].items():
        batch = len(next(iter(examples[name].values())))
        assert set(shapes) == set(card["signatures"][name]["outputs"])
        assert all(shape[0] == batch for shape in shapes.values()), (name, shapes)
    warmup = task.warmup_inputs(run)
    assert len(served["replayed"]) == len(next(iter(warmup.values()))) > 0
    assert all(all(shape[0] == 1 for shape in shapes.values()) for shapes in served["replayed"])


def _as_text(values):
    """Request values with bytes as latin-1 text, for JSON (`FRESH_PROCESS` turns them back)."""
    if isinstance(values, list):
        return [_as_text(value) for value in values]
    return values.decode("latin-1") if isinstance(values, bytes) else values


def test_every_task_names_itself_in_run_and_card(exported):
    task, work_dir, _ = exported
    assert runner.run_definition(work_dir).task == task.name
    assert tasks.of(runner.run_definition(work_dir)) is task


def test_datasets_know_their_number_of_batches(tmp_path, seqapp_cache_dir):
    definition = _tiny_classification(tmp_path, pipeline={"batch_size": 5})
    inputter = tasks.of(definition).inputter(definition)
    for mode in ("bucket", "batch_max", "global_max"):
        for split, training in (("train", True), ("test", False)):
            dataset = inputter.dataset(split, training=training, batching_mode=mode)
            assert int(dataset.cardinality()) == len(list(dataset)) > 1, (mode, split)


def test_input_context_shards_before_shuffling(tmp_path, seqapp_cache_dir):
    definition = _tiny_classification(tmp_path)
    inputter = tasks.of(definition).inputter(definition)
    rows = []
    for index in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index)
        shard = inputter.dataset("train", training=True, input_context=context)
        batches = list(shard)
        assert int(shard.cardinality()) == len(batches)
        rows.append(sorted(tuple(row[mask].tolist()) for features, _ in batches
                           for row, mask in zip(features["token_ids"].numpy(), features["padding_mask"].numpy())))
    whole = sorted(tuple(row[mask].tolist()) for features, _ in inputter.dataset("train", training=True)
                   for row, mask in zip(features["token_ids"].numpy(), features["padding_mask"].numpy()))
    assert sorted(rows[0] + rows[1]) == whole and len(rows[0]) == len(rows[1]) == len(whole) // 2


def _tiny_classification(tmp_path, **sections):
    texts = [f"word{i % 7} " * (1 + i % 5) + ("good" if i % 2 else "bad") for i in range(40)]
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{t},{'pos' if i % 2 else 'neg'}\n"
                                                               for i, t in enumerate(texts)))
    raw = {"task": "classification", "seed": 1,
           "data": {"format": "csv", "train": "train.csv", "test": "train.csv"},
           "tokenizer": {"vocab_size": 60, "min_count": 1},
           "pipeline": {"max_length": 8, "tokens_per_batch": 24, "num_buckets": 3, "shuffle_buffer": 100},
           "model": {"family": "gru", "embedding_dim": 4, "units": 4}, "base_dir": str(tmp_path)}
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return config.validate(raw)


PREPARE = """
import hashlib, json, sys
from seqapp import config, datasets, tasks
builder = datasets.prepare("mr_polarity")
definition = config.validate({"task": "classification", "data": {"dataset": "mr_polarity"},
                              "tokenizer": {"vocab_size": 300}})
tokenizer = tasks.of(definition).inputter(definition).tokenizers["text"]
print(json.dumps({"examples": builder.info.splits["train"].num_examples, "vocab": str(tokenizer.vocab_path),
                  "sha": hashlib.sha256(open(tokenizer.vocab_path, "rb").read()).hexdigest()}))
"""


def test_two_processes_prepare_the_same_data_at_once(tmp_path, shared_data_dir):
    import os

    env = {**os.environ, "SEQAPP_CACHE_DIR": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    processes = [subprocess.Popen([sys.executable, "-c", PREPARE], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (stdout, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    first, second = (json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs)
    assert first == second and first["examples"] > 0
    cache = tmp_path / "cache"
    assert [p.name for p in (cache / "vocab").iterdir()] == [Path(first["vocab"]).name]  # one copy, no leftovers
    prepared = cache / "tensorflow_datasets" / "mr_polarity"
    assert [p.name for p in prepared.iterdir()] == ["1.0.0"]  # one copy, no half-prepared folder left


def test_saved_definitions_of_earlier_runs_still_load():
    # A run folder written before definitions were per task holds every section for every task.
    old = {"task": "classification", "data": {"dataset": "sst2", "source": None, "target": None},
           "tokenizer": {"vocab_size": 100, "shared": False},
           "model": {"family": "gru", "num_heads": 4, "share_embeddings": False},
           "train": {"warmup_steps": 0, "label_smoothing": 0.0}, "decode": {"beam_size": 4}}
    definition = config.saved(old, source="definition.yaml")
    assert definition.model.family == "gru" and definition.tokenizer.vocab_size == 100
    with pytest.raises(Exception, match="decode"):
        config.validate(old)


def test_a_non_chief_process_writes_no_run_folder(tmp_path, monkeypatch):
    from seqapp.training.run_folder import RunFolder

    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    folder = RunFolder(tmp_path / "run")
    folder.write_text("labels.txt", "x\n")
    assert not (tmp_path / "run").exists() and (folder / "labels.txt").read_text() == "x\n"
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    RunFolder(tmp_path / "run").write_text("labels.txt", "y\n")
    assert (tmp_path / "run" / "labels.txt").read_text() == "y\n"


def test_atomic_path_publishes_whole_or_nothing(tmp_path):
    from seqapp.atomic import atomic_path

    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "vocab.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "theirs").write_text("1")
    with atomic_path(tmp_path / "run", directory=True) as tmp:  # another process published first
        (tmp / "ours").write_text("2")
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["theirs"]


def test_classification_eval_on_a_split_and_a_user_file(sentiment_run, tmp_path, capsys):
    import shutil

    from seqapp.cli import main as cli_main

    shutil.copytree(sentiment_run, tmp_path / "run")  # eval writes metrics.json; the shared run stays as trained
    sentiment_run = tmp_path / "run"
    assert cli_main(["eval", "--work-dir", str(sentiment_run), "--split", "test"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"test: accuracy \d\.\d{4}, macro-F1 \d\.\d{4} \(6 examples\)", printed), printed
    assert "<- predicted" in printed and re.search(r"neg\s+\d+\s+\d+", printed)
    (tmp_path / "mine.tsv").write_text("text\tlabel\na triumph of acting\tpos\na tedious mess\tneg\ndull\tneg\n")
    assert cli_main(["eval", "--work-dir", str(sentiment_run), "--data", str(tmp_path / "mine.tsv")]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"mine.tsv: accuracy \d\.\d{4}, macro-F1 \d\.\d{4} \(3 examples\)", printed), printed
    (tmp_path / "bad.tsv").write_text("text\tlabel\nword1 good\tmeh\n")
    assert cli_main(["eval", "--work-dir", str(sentiment_run), "--data", str(tmp_path / "bad.tsv")]) == 2
    assert "bad.tsv:2" in capsys.readouterr().err
    assert cli_main(["eval", "--work-dir", str(sentiment_run), "--beam-size", "2"]) == 2
    assert "--beam-size" in capsys.readouterr().err


def test_demo_small_runs_every_job_over_rest_and_grpc(demo_small):
    tmp_path, exports, printed = demo_small
    assert set(exports) == set(tasks.REGISTRY)
    for task in tasks.REGISTRY.values():
        assert exports[task.name] == tmp_path / "saved_models" / task.export_name / "1"
        assert (exports[task.name] / "saved_model.pb").exists()
        assert (tmp_path / "demo" / task.name / "curves.png").exists()
        (inputs,) = task.demo_inputs().values()
        queries = len(inputs)
        for protocol in ("REST", "gRPC"):
            answer = printed.split(f"{protocol} {task.export_name} :predict\n")[1].split("\n")[:queries]
            assert all(line.startswith("  ") for line in answer), answer
