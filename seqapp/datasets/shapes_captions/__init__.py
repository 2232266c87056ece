"""Generated shapes-captioning benchmark (scenes.py, grammar.py; TFDS builder in shapes_captions_dataset_builder.py)."""
