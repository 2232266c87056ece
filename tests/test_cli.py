"""The `seqapp` command as users run it, in a separate process."""

import os
import re
import subprocess
import sys

import pytest


def seqapp(*args, cache_dir):
    env = {**os.environ, "SEQAPP_CACHE_DIR": str(cache_dir), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "seqapp", *args], capture_output=True, text=True, env=env,
                          timeout=900)


def test_help_lists_commands(seqapp_cache_dir):
    result = seqapp("--help", cache_dir=seqapp_cache_dir)
    assert result.returncode == 0
    for command in ("data", "demo"):
        assert command in result.stdout


def test_data_list_names_every_dataset_and_its_local_folder(seqapp_cache_dir, shared_data_dir):
    result = seqapp("data", "list", cache_dir=seqapp_cache_dir)
    assert result.returncode == 0, result.stderr
    for name in ("mr_polarity", "sst2", "multi30k", "ptb", "tiny_shakespeare", "imdb", "anki_spa_eng"):
        assert re.search(rf"^{name}\s+\w+\s+local {shared_data_dir / name}$", result.stdout, re.M), result.stdout


# Counts from each dataset's SOURCE.md under shared/data.
EXPECTED_COUNTS = {
    "mr_polarity": [r"train\s+8530 examples\s+\(neg: 4265, pos: 4265\)",
                    r"validation\s+1066 examples\s+\(neg: 533, pos: 533\)",
                    r"test\s+1066 examples\s+\(neg: 533, pos: 533\)"],
    "sst2": [r"train\s+67349 examples\s+\(negative: 29780, positive: 37569\)",
             r"validation\s+872 examples\s+\(negative: 428, positive: 444\)",
             r"test\s+1821 examples\s+\(\(hidden\): 1821\)"],
    "multi30k": [r"train\s+29000 examples", r"validation\s+1014 examples", r"test\s+1000 examples"],
}


# The counts are of the whole splits. The pipeline is measured on a training slice for the two large
# datasets (SST-2: 5,000 examples and 2,000 tokens; Multi30k: 10,000 examples) and on MR's whole split.
SLICED = {
    "sst2": "task: classification\ndata: {dataset: sst2, max_train_examples: 5000}\ntokenizer: {vocab_size: 2000}\n",
    "multi30k": "task: translation\ndata: {dataset: multi30k, source: de, target: en, max_train_examples: 10000}\n"
                "tokenizer: {lower_case: false, normalization_form: NFC}\n",
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_COUNTS))
def test_data_stats_counts_match_source_md(name, seqapp_cache_dir, shared_data_dir, tmp_path):
    pipeline = []
    if name in SLICED:
        (tmp_path / "slice.yaml").write_text(SLICED[name])
        pipeline = ["--pipeline", str(tmp_path / "slice.yaml")]
    result = seqapp("data", "stats", name, "--out", str(tmp_path), *pipeline, cache_dir=seqapp_cache_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    for pattern in EXPECTED_COUNTS[name]:
        assert re.search(pattern, result.stdout), (pattern, result.stdout)
    assert re.search(r"bucket\s+0\.9\d\d\s+<- configured", result.stdout), result.stdout
    assert (tmp_path / f"{name}_lengths.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_dataset_is_a_clear_error(seqapp_cache_dir):
    result = seqapp("data", "stats", "nosuchdata", cache_dir=seqapp_cache_dir)
    assert result.returncode == 2
    assert "unknown dataset 'nosuchdata'" in result.stderr and "Traceback" not in result.stderr


def test_bad_pipeline_file_names_file_and_key(seqapp_cache_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: classification\ndata: {dataset: mr_polarity}\npipeline: {max_lenght: 5}\n")
    result = seqapp("data", "stats", "mr_polarity", "--pipeline", str(bad), cache_dir=seqapp_cache_dir)
    assert result.returncode == 2
    assert f"{bad}: pipeline.max_lenght: Extra inputs are not permitted" in result.stderr


def test_data_prepare_reports_splits(seqapp_cache_dir, shared_data_dir):
    result = seqapp("data", "prepare", "mr_polarity", cache_dir=seqapp_cache_dir)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^train\s+8530 examples$", result.stdout, re.M)
    assert re.search(r"^test\s+1066 examples$", result.stdout, re.M)
    assert f"prepared in {seqapp_cache_dir}" in result.stdout
