"""PNG pictures of results people would rather see than read."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def length_histogram(lengths, path, title):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(lengths, bins=min(60, max(10, int(np.max(lengths)))), color="#4c72b0")
    ax.set_xlabel("tokens per example (training split)")
    ax.set_ylabel("examples")
    ax.set_title(title)
    return _save(fig, path)


def training_curves(history, path):
    """Loss and accuracy per epoch, training and validation (a Keras `History.history` dict)."""
    metrics = [m for m in ("loss", "accuracy", "masked_accuracy") if m in history]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        epochs = np.arange(1, len(history[metric]) + 1)
        ax.plot(epochs, history[metric], marker="o", label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.legend()
    return _save(fig, path)


def confusion_matrix(matrix, labels, path, title="confusion matrix"):
    matrix = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2.5, 1.2 * len(labels) + 2))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (row, col), value in np.ndenumerate(matrix):
        color = "white" if value > matrix.max() / 2 else "black"
        ax.text(col, row, str(value), ha="center", va="center", color=color)
    ax.set_title(title)
    return _save(fig, path)


def attention_heatmap(weights, source_tokens, target_tokens, path, title="cross-attention"):
    """Target tokens (rows) against source tokens (columns), darker = more attention."""
    weights = np.asarray(weights)[: len(target_tokens), : len(source_tokens)]
    fig, ax = plt.subplots(figsize=(0.45 * len(source_tokens) + 2.5, 0.4 * len(target_tokens) + 2))
    ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=max(float(weights.max(initial=0.0)), 1e-6), aspect="auto")
    ax.set_xticks(range(len(source_tokens)), source_tokens, rotation=60, ha="right")
    ax.set_yticks(range(len(target_tokens)), target_tokens)
    ax.set_xlabel("source")
    ax.set_ylabel("translation")
    ax.set_title(title)
    return _save(fig, path)


def attention_over_image(image, weights, feature_map_shape, tokens, path, title="attention"):
    """One panel per generated token: the image with that token's attention over the feature map
    laid on it (brighter = more attention), the first panel the image alone.

    Args:
        image: float [height, width, 3] in [0, 1].
        weights: [steps, positions], positions = rows x columns of the feature map.
        feature_map_shape: `(rows, columns)`.
        tokens: the generated tokens, one per row of `weights` that is drawn.
    """
    image = np.asarray(image)
    rows, columns = feature_map_shape
    panels = len(tokens) + 1
    per_row = min(panels, 6)
    grid_rows = -(-panels // per_row)
    fig, axes = plt.subplots(grid_rows, per_row, figsize=(2 * per_row, 2.2 * grid_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(image)
    axes.flat[0].set_title("image")
    extent = (0, image.shape[1], image.shape[0], 0)
    for ax, token, row in zip(axes.flat[1:], tokens, np.asarray(weights)):
        ax.imshow(image, extent=extent)
        ax.imshow(row.reshape(rows, columns), cmap="magma", alpha=0.6, extent=extent, interpolation="bilinear",
                  vmin=0.0, vmax=max(float(row.max(initial=0.0)), 1e-6))
        ax.set_title(token)
    fig.suptitle(title)
    return _save(fig, path)


def tuning_progress(scores, objective, direction, path):
    """A search's objective per trial (in the order trials finished) and the best so far.

    Args:
        scores: `[(trial id, score or None)]`, None for a trial that failed.
        objective: the objective's name (the y axis).
        direction: "max" or "min".
        path: the PNG to write.
    """
    fig, ax = plt.subplots(figsize=(7, 3.5))
    order = np.arange(1, len(scores) + 1)
    values = np.array([np.nan if score is None else score for _, score in scores], dtype=float)
    done = ~np.isnan(values)
    ax.plot(order[done], values[done], "o", color="#4c72b0", label="trial")
    failed = order[~done]
    if len(failed):
        floor = np.nanmin(values) if done.any() else 0.0
        ax.plot(failed, np.full(len(failed), floor), "x", color="#c44e52", label="failed")
    if done.any():
        pick = np.fmax if direction == "max" else np.fmin
        ax.step(order, pick.accumulate(np.where(done, values, np.nan)), where="post", color="#dd8452",
                label="best so far")
    ax.set_xticks(order, [trial_id for trial_id, _ in scores], fontsize=7)
    ax.set_xlabel("trial (in the order finished)")
    ax.set_ylabel(objective)
    ax.legend()
    return _save(fig, path)
