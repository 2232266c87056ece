"""Hyperparameter search (`seqapp tune`) on KerasTuner's engine: the search space a definition
declares (`space`), the tuner that trains trials through the runner (`tuner`), results
(`results`) and chief/worker processes (`distributed`)."""
