"""Padding efficiency and BiLSTM training throughput of three batching strategies.

On SST-2 train and Multi30k de->en train, compares batches of `--batch-size`
shuffled examples padded (a) to the batch max and (b) to the global max length
with (c) seqapp's bucketed pipeline, whose token budget is set so its batches
hold as many examples on average as (a)'s (the same number of steps per epoch).
Throughput is real (non-padding) tokens per second of one fixed small masked
BiLSTM training step, timed for `--seconds` per strategy after a warm-up.

    SEQAPP_DATA_DIR=../shared/data python bench/pipeline.py
"""

import argparse
import time

import keras
import numpy as np
import tensorflow as tf

from seqapp import tasks
from seqapp.data import pipeline
from seqapp.data import stats

import common

MODES = {"batch_max": "batch_max", "global_max": "global_max", "bucketed": "bucket"}


def bilstm_model(vocab_size, num_outputs, token_level):
    """Embedding -> BiLSTM(64) per token sequence; pooled for labels, per token for targets."""
    embed = keras.layers.Embedding(vocab_size, 64, mask_zero=True)
    encoder = keras.layers.Bidirectional(keras.layers.LSTM(64, return_sequences=True))
    head = keras.layers.Dense(num_outputs)

    def forward(features):
        outputs = {}
        for key, ids in features.items():
            if key.endswith("token_ids"):
                outputs[key] = encoder(embed(ids))
        if not token_level:
            pooled = keras.layers.GlobalAveragePooling1D()(outputs["token_ids"], mask=features["padding_mask"])
            return head(pooled)
        source = keras.layers.GlobalAveragePooling1D()(
            outputs["encoder_token_ids"], mask=features["encoder_padding_mask"]
        )
        return head(outputs["decoder_token_ids"] + source[:, None, :])

    return forward, [embed, encoder, head]


def throughput(dataset, forward, layers, token_level, seconds, warmup_steps=5):
    optimizer = keras.optimizers.Adam(1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function(input_signature=[dataset.element_spec[0], dataset.element_spec[1]])
    def step(features, labels):
        with tf.GradientTape() as tape:
            logits = forward(features)
            weights = tf.cast(features["decoder_padding_mask"], tf.float32) if token_level else None
            loss = loss_fn(labels, logits, sample_weight=weights)
        variables = [v for layer in layers for v in layer.trainable_variables]
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    iterator = iter(dataset.repeat())
    for _ in range(warmup_steps):
        step(*next(iterator))
    tokens = steps = examples = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        features, labels = next(iterator)
        step(features, labels)
        masks = [m for k, m in features.items() if k.endswith("padding_mask")]
        tokens += int(sum(tf.reduce_sum(tf.cast(m, tf.int64)) for m in masks))
        examples += int(tf.shape(labels)[0])
        steps += 1
    elapsed = time.perf_counter() - start
    return {"tokens_per_s": tokens / elapsed, "steps": steps, "examples_per_step": examples / steps, "seconds": elapsed}


def measure(name, batch_size, seconds, seed):
    definition = stats.definition_for_dataset(name)
    lengths = tasks.of(definition).inputter(definition).train_lengths
    # Same mean examples per batch as batch_max: the budget is batch_size times the mean length.
    budget = int(round(batch_size * float(lengths.mean())))
    definition = definition.model_copy(
        update={
            "seed": seed,
            "pipeline": definition.pipeline.model_copy(
                update={"batch_size": batch_size, "tokens_per_batch": budget, "max_batch_size": 8 * batch_size}
            ),
        }
    )
    inputter = tasks.of(definition).inputter(definition)
    token_level = definition.task == "translation"
    vocab = max(tok.vocab_size for tok in inputter.tokenizers.values()) + 1
    outputs = vocab if token_level else len(inputter.label_names)
    result = {"padding_efficiency": {}, "tokens_per_s": {}, "detail": {}}
    for label, mode in MODES.items():
        dataset = inputter.dataset("train", training=True, batching_mode=mode)
        result["padding_efficiency"][label] = pipeline.padding_efficiency(dataset)
        keras.utils.set_random_seed(seed)
        forward, layers = bilstm_model(vocab, outputs, token_level)
        run = throughput(dataset, forward, layers, token_level, seconds)
        result["tokens_per_s"][label] = run["tokens_per_s"]
        result["detail"][label] = run
        print(f"{name} {label}: efficiency {result['padding_efficiency'][label]:.3f}, "
              f"{run['tokens_per_s']:.0f} tokens/s, {run['examples_per_step']:.1f} examples/step", flush=True)
    tps = result["tokens_per_s"]
    result["speedup"] = {"bucketed_vs_batch_max": tps["bucketed"] / tps["batch_max"],
                         "bucketed_vs_global_max": tps["bucketed"] / tps["global_max"]}
    result["settings"] = {"batch_size": batch_size, "tokens_per_batch": budget,
                          "max_length": definition.pipeline.max_length,
                          "num_buckets": definition.pipeline.num_buckets,
                          "buckets": len(inputter.buckets.boundaries) + 1,
                          "mean_train_length": float(np.mean(lengths)), "seconds_per_mode": seconds,
                          "model": "Embedding(64, mask_zero) -> BiLSTM(64+64) -> Dense", "seed": seed}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["sst2", "multi30k"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=45.0, help="timed seconds per strategy")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    figures = {name: measure(name, args.batch_size, args.seconds, args.seed) for name in args.datasets}
    figures["goals"] = {
        name: {"efficiency_bucketed_ge_0.9": figures[name]["padding_efficiency"]["bucketed"] >= 0.9,
               "tokens_per_s_bucketed_over_batch_max_ge_1.3": figures[name]["speedup"]["bucketed_vs_batch_max"] >= 1.3,
               "tokens_per_s_bucketed_over_global_max_ge_2.0": figures[name]["speedup"]["bucketed_vs_global_max"] >= 2.0}
        for name in args.datasets
    }
    common.write("pipeline", figures)


if __name__ == "__main__":
    main()
