"""Long-memory tasks: TCN against LSTM on the adding problem and copy memory (Bai et al. 2018).

Reproduces the comparison of Bai, Kolter & Koltun 2018 ("An Empirical Evaluation of
Generic Convolutional and Recurrent Networks for Sequence Modeling", section 4 and
appendix) at sequence length T (default 200), with seqapp's `TCN` layer against
`keras.layers.LSTM` of about the same parameter count:

- adding problem: T steps of (value uniform in [0, 1], marker), exactly two markers,
  one in each half; regress the sum of the two marked values from the last step (MSE).
  Baseline: always predicting 1.0 (MSE 1/6 in expectation; recorded on the test set).
- copy memory (the paper's format): 10 digits from 1..8, T-1 zeros, then 11 nines (the
  first is the "go" delimiter), T+20 steps in all, one-hot; at every step predict
  0, except the 10 digits on the last 10 steps (cross-entropy over all steps). Baseline:
  the memoryless strategy's 10 ln 8 / (T + 20). Also records the accuracy on the copied digits.

Each model trains for `--steps` Adam steps (gradient norm clipped to 1) on freshly
generated batches, the same stream for both models, and records the loss on a small
held-out batch every `--eval-every` steps (plotted in results/long_memory_curves.png,
log scale, baselines dashed), then its loss on a held-out test set. The TCN's dilations
double until its receptive field covers the whole sequence. Losses are plain floats,
accuracies fractions. Partial results are written after every model.

    .venv/bin/python bench/long_memory.py

With the defaults (T=200, 5000 steps of batch 32 per model and task, a held-out
evaluation every 100 steps) this takes about 15-20 minutes on 2 CPU cores. Measured
on 2 cores shared with other training jobs (load average 5-6), per step: TCN 40-65 ms
(adding), 60-65 ms (copy); LSTM 60-85 ms (adding), 65-95 ms (copy), about 0.26 s for
the four together: about 23 minutes in all there, so likely 12-15 on an idle machine.
"""

import argparse
import dataclasses
import math
import time
from typing import Callable

import keras
import matplotlib
import numpy as np

from seqapp.layers import TCN

import common

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402

COPY_DIGITS = 10  # how many digits the copy-memory task asks to recall
TCN_FILTERS = 30
TCN_KERNEL_SIZE = 6
# No activation normalization, like the paper's TCN (weight norm only): in a 400-step trial
# at T=200, layer normalization left the adding problem at the baseline, none solved it.
TCN_NORMALIZATION = "none"
LEARNING_RATES = {"tcn": 2e-3, "lstm": 1e-3}
CLIPNORM = 1.0
PUBLISHED = {
    "source": "Bai, Kolter & Koltun 2018, Table 1 (about 70K parameters for the adding problem, "
              "16K for copy memory)",
    "adding_T600_mse": {"tcn": 5.8e-5, "lstm": 0.164},
    "copy_memory_T1000_loss": {"tcn": 3.5e-5, "lstm": 0.0204},
}


def adding_batch(rng, n, length):
    values = rng.uniform(0.0, 1.0, (n, length))
    rows = np.arange(n)
    first = rng.integers(0, length // 2, n)
    second = rng.integers((length + 1) // 2, length, n)
    markers = np.zeros((n, length))
    markers[rows, first] = markers[rows, second] = 1.0
    x = np.stack([values, markers], axis=-1).astype("float32")
    y = (values[rows, first] + values[rows, second])[:, None].astype("float32")
    return x, y


def copy_batch(rng, n, length):
    """`length` is the blank T; sequences have T + 20 steps, as in the paper's code."""
    digits = rng.integers(1, 9, (n, COPY_DIGITS))
    symbols = np.zeros((n, length + 2 * COPY_DIGITS), dtype="int64")
    symbols[:, :COPY_DIGITS] = digits
    symbols[:, length + COPY_DIGITS - 1:] = 9
    targets = np.zeros_like(symbols)
    targets[:, -COPY_DIGITS:] = digits
    return np.eye(10, dtype="float32")[symbols], targets


def copied_digit_accuracy(y_true, y_pred):
    return float(np.mean(np.argmax(y_pred[:, -COPY_DIGITS:], axis=-1) == y_true[:, -COPY_DIGITS:]))


@dataclasses.dataclass(frozen=True)
class Task:
    key: str  # its figures' name in the JSON
    generate: Callable  # (rng, n, T) -> (inputs, targets)
    extra_steps: int  # sequence length beyond T
    channels: int
    outputs: int
    per_step: bool  # a prediction at every step, or one from the last step
    loss: Callable  # () -> a Keras loss
    loss_name: str  # figures record test_<loss_name> and baseline_<loss_name>
    baseline: Callable  # (T, test targets) -> the loss of the task's trivial strategy
    extra_metrics: Callable = lambda y_true, y_pred: {}


TASKS = {
    "adding": Task("adding", adding_batch, 0, 2, 1, False, keras.losses.MeanSquaredError, "mse",
                   lambda length, y: float(np.mean((y - 1.0) ** 2))),
    "copy": Task("copy_memory", copy_batch, 2 * COPY_DIGITS, 10, 10, True,
                 lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True), "loss",
                 lambda length, y: COPY_DIGITS * math.log(8) / (length + 2 * COPY_DIGITS),
                 lambda y_true, y_pred: {"copied_digit_accuracy": copied_digit_accuracy(y_true, y_pred)}),
}


def covering_dilations(steps):
    """The fewest dilations 1, 2, 4, ... whose TCN sees all `steps` inputs from the last step."""
    dilations = (1,)
    while TCN(TCN_FILTERS, TCN_KERNEL_SIZE, dilations).receptive_field < steps:
        dilations += (2 * dilations[-1],)
    return dilations


def build_tcn(task, steps):
    inputs = keras.Input((steps, task.channels))
    tcn = TCN(TCN_FILTERS, TCN_KERNEL_SIZE, covering_dilations(steps), causal=True,
              normalization=TCN_NORMALIZATION)
    hidden = tcn(inputs)
    assert tcn.receptive_field >= steps, (tcn.receptive_field, steps)
    if not task.per_step:
        hidden = hidden[:, -1]
    model = keras.Model(inputs, keras.layers.Dense(task.outputs)(hidden), name="tcn")
    return model, {"receptive_field": tcn.receptive_field, "dilations": list(tcn.dilations),
                   "filters": TCN_FILTERS, "kernel_size": TCN_KERNEL_SIZE, "normalization": tcn.normalization}


def matching_lstm_units(params, channels, outputs):
    """Units giving LSTM + Dense head `params` parameters: 4u(channels + u + 1) + (u + 1) outputs."""
    b, c = 4 * (channels + 1) + outputs, outputs - params
    return round((-b + math.sqrt(b * b - 16 * c)) / 8)


def build_lstm(task, steps):
    tcn_params = build_tcn(task, steps)[0].count_params()
    units = matching_lstm_units(tcn_params, task.channels, task.outputs)
    inputs = keras.Input((steps, task.channels))
    hidden = keras.layers.LSTM(units, return_sequences=task.per_step)(inputs)
    return keras.Model(inputs, keras.layers.Dense(task.outputs)(hidden), name="lstm"), {"units": units}


BUILDERS = {"tcn": build_tcn, "lstm": build_lstm}


def train_and_test(task, name, data, args):
    """Trains one model on a fresh `data["train"]()` stream; returns its figures."""
    steps = args.length + task.extra_steps
    # Same seed per model: its initialization does not depend on what ran before.
    keras.utils.set_random_seed(args.seed)
    model, details = BUILDERS[name](task, steps)
    print(f"{task.key} {name}: {model.count_params()} params, {details}", flush=True)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATES[name], clipnorm=CLIPNORM), loss=task.loss())
    started = time.perf_counter()
    history = model.fit(data["train"](), steps_per_epoch=args.eval_every, epochs=args.steps // args.eval_every,
                        validation_data=data["eval"], shuffle=False, verbose=2)
    seconds = time.perf_counter() - started
    x_test, y_test = data["test"]
    predictions = model.predict(x_test, batch_size=100, verbose=0)
    test = {f"test_{task.loss_name}": float(task.loss()(y_test, predictions)),
            **task.extra_metrics(y_test, predictions)}
    print(f"{task.key} {name}: {test}", flush=True)
    return {**test, "params": model.count_params(), **details, "learning_rate": LEARNING_RATES[name],
            "steps": args.steps, "train_seconds": seconds, "ms_per_step": 1000 * seconds / args.steps,
            "eval_curve": {"steps": [args.eval_every * (i + 1) for i in range(len(history.history["val_loss"]))],
                           "loss": [float(v) for v in history.history["val_loss"]]}}


def task_data(task, task_index, args):
    """The held-out eval and test sets, and a function starting the endless training stream."""
    def rng(stream):
        return np.random.default_rng([args.seed, task_index, stream])

    def train():
        # Every call restarts the same stream, so all models train on the same batches.
        generator = rng(0)
        while True:
            yield task.generate(generator, args.batch_size, args.length)

    return {"train": train, "eval": task.generate(rng(1), args.eval_size, args.length),
            "test": task.generate(rng(2), args.test_size, args.length)}


def plot_curves(figures, path):
    tasks = [task for task in TASKS.values() if task.key in figures]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        results = figures[task.key]
        for name in BUILDERS:
            if name in results:
                curve = results[name]["eval_curve"]
                ax.plot(curve["steps"], curve["loss"], label=f"{name} ({results[name]['params']} params)")
        ax.axhline(results[f"baseline_{task.loss_name}"], color="grey", linestyle="--", label="baseline")
        ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel("held-out " + ("MSE" if task.loss_name == "mse" else "cross-entropy"))
        ax.set_title(f"{task.key}, T={figures['length']}")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=int, default=200, help="T: the sequence length (the blank, for copy memory)")
    parser.add_argument("--steps", type=int, default=5000, help="training steps per model and task")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--eval-every", type=int, default=100, help="steps between held-out evaluations")
    parser.add_argument("--eval-size", type=int, default=256, help="examples in the periodic held-out batch")
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--models", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    parser.add_argument("--dry-run", action="store_true",
                        help="write the plot to /tmp and no results JSON (for smoke tests)")
    args = parser.parse_args()
    args.eval_every = min(args.eval_every, args.steps)  # short smoke runs still get one evaluation
    if args.steps % args.eval_every:
        parser.error("--steps must be a multiple of --eval-every")
    curves = "/tmp/long_memory_curves.png" if args.dry_run else common.RESULTS / "long_memory_curves.png"

    figures = {"length": args.length, "loss_unit": "adding: MSE; copy_memory: mean cross-entropy (nats) per step",
               "published": PUBLISHED}
    figures["settings"] = {
        "steps": args.steps, "batch_size": args.batch_size, "eval_every": args.eval_every,
        "eval_size": args.eval_size, "test_size": args.test_size, "seed": args.seed,
        "optimizer": f"Adam, clipnorm {CLIPNORM}", "learning_rates": LEARNING_RATES,
        "tcn": f"seqapp TCN, causal, {TCN_FILTERS} filters, kernel {TCN_KERNEL_SIZE}, "
               f"normalization {TCN_NORMALIZATION}, no dropout; dilations 1, 2, 4, ... until the receptive field "
               "covers the sequence",
        "lstm": "one keras LSTM layer, units matching the TCN's parameter count",
        "data": "fresh batches from a seeded numpy Generator, the same stream for every model",
        "train_seconds": "wall time of the training, periodic held-out evaluations included",
    }
    for key in args.tasks:
        task = TASKS[key]
        # Seeded by the task's place in TASKS, so a run of one task sees the same data as a full run.
        data = task_data(task, list(TASKS).index(key), args)
        figures[task.key] = {f"baseline_{task.loss_name}": task.baseline(args.length, data["test"][1])}
        for name in args.models:
            figures[task.key][name] = train_and_test(task, name, data, args)
            if not args.dry_run:
                common.write("long_memory", figures)
        if {"tcn", "lstm"} <= set(args.models):
            tcn, lstm = (figures[task.key][name][f"test_{task.loss_name}"] for name in ("tcn", "lstm"))
            figures.setdefault("ordering", {})[f"{key}_tcn_better"] = tcn < lstm
    plot_curves(figures, curves)
    if not args.dry_run:
        common.write("long_memory", figures)
    print("ordering:", figures.get("ordering"), flush=True)


if __name__ == "__main__":
    main()
