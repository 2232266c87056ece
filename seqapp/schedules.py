"""Learning-rate schedules."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="seqapp")
class WarmupInverseSqrt(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup to `peak` over `warmup_steps`, then decay as 1/sqrt(step).

    The Transformer's schedule (Vaswani et al., 2017), parametrized by its peak
    rather than by the model width: `peak * min(step / warmup, sqrt(warmup / step))`.

    Args:
        peak: the learning rate reached at `warmup_steps`.
        warmup_steps: steps of the linear ramp (> 0).

    Example:

    >>> schedule = WarmupInverseSqrt(1e-3, warmup_steps=4000)
    >>> float(schedule(16000))   # half the peak, 4x past the warmup
    0.0005
    """

    def __init__(self, peak, warmup_steps):
        self.peak = peak
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        step = ops.maximum(ops.cast(step, "float32") + 1.0, 1.0)
        warmup = float(self.warmup_steps)
        return self.peak * ops.minimum(step / warmup, ops.sqrt(warmup / step))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}
