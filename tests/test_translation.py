"""Translation end to end on a tiny parallel corpus: train, decode, BLEU, export, fresh-process reload."""

import json
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from seqapp import config
from seqapp import evaluation
from seqapp import runner
from seqapp.cli import main as cli_main

SUBJECTS = [("der Hund", "the dog"), ("die Katze", "the cat"), ("ein Mann", "a man"), ("eine Frau", "a woman")]
VERBS = [("läuft über die Wiese", "runs across the meadow"), ("schläft auf dem Sofa", "sleeps on the sofa"),
         ("spielt mit einem roten Ball", "plays with a red ball"), ("trinkt Wasser aus einer Schale",
                                                                  "drinks water from a bowl")]
PAIRS = [(f"{de_s.capitalize()} {de_v}.", f"{en_s.capitalize()} {en_v}.") for de_s, en_s in SUBJECTS
         for de_v, en_v in VERBS]


def _write_parallel(folder, pairs):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "src.de").write_text("".join(f"{de}\n" for de, _ in pairs), encoding="utf-8")
    (folder / "tgt.en").write_text("".join(f"{en}\n" for _, en in pairs), encoding="utf-8")
    return {"source": str(folder / "src.de"), "target": str(folder / "tgt.en")}


def _definition(tmp_path, family):
    train = _write_parallel(tmp_path / "train", PAIRS * 4)
    held_out = _write_parallel(tmp_path / "dev", PAIRS)
    model = ({"family": "transformer", "embedding_dim": 32, "num_layers": 1, "num_heads": 2, "ffn_dim": 64,
              "dropout": 0.0} if family == "transformer"
             else {"family": "lstm_attention", "embedding_dim": 32, "units": 32, "dropout": 0.0})
    return config.validate({
        "task": "translation",
        "seed": 7,
        "data": {"format": "parallel", "train": train, "validation": held_out, "test": held_out,
                 "source": "de", "target": "en"},
        "tokenizer": {"vocab_size": 200, "lower_case": False, "normalization_form": "NFC", "min_count": 1},
        "pipeline": {"max_length": 16, "tokens_per_batch": 256, "num_buckets": 2},
        "model": model,
        "train": {"epochs": 30, "learning_rate": 0.01, "early_stopping_patience": 30},
        "decode": {"beam_size": 3},
        "base_dir": str(tmp_path),
    })


@pytest.fixture(scope="module", params=["transformer", "lstm_attention"])
def trained(request, tmp_path_factory, seqapp_cache_dir):
    tmp_path = tmp_path_factory.mktemp(request.param)
    results = runner.train(_definition(tmp_path, request.param), tmp_path / "run", verbose=0)
    return tmp_path / "run", results


def test_overfitted_tiny_set_translates_it_back(trained):
    work_dir, results = trained
    assert results["validation"]["bleu"] >= 90, results  # greedy decoding, sacreBLEU
    assert results["validation"]["perplexity"] < 1.5
    beam = runner.evaluate(work_dir, ["test"], beam_size=3)["test"]
    assert beam["bleu"] >= 90 and beam["beam_size"] == 3
    for name in ("best.keras", "source_vocab.txt", "target_vocab.txt", "history.csv", "training.json",
                 "curves.png", "metrics.json"):
        assert (work_dir / name).exists(), name


def test_cached_and_recomputed_decoding_agree_and_beam_one_is_greedy(trained):
    work_dir, _ = trained
    translator = runner.load_run(work_dir).translator
    texts = tf.constant([de for de, _ in PAIRS[:6]] + ["Der Mann trinkt", "Katze Katze Katze Katze"])
    for beam_size in (1, 3):
        cached = translator.translate(texts, beam_size=beam_size, cached=True)
        recomputed = translator.translate(texts, beam_size=beam_size, cached=False)
        np.testing.assert_array_equal(cached["token_ids"].numpy(), recomputed["token_ids"].numpy())
        np.testing.assert_allclose(cached["score"].numpy(), recomputed["score"].numpy(), atol=1e-4)
    greedy = evaluation.translate_all(translator, [de for de, _ in PAIRS], beam_size=1)
    beam_one = [t.decode() for t in translator.translate(tf.constant([de for de, _ in PAIRS]), beam_size=1)
                ["translation"].numpy()]
    assert greedy == beam_one
    assert evaluation.translation_metrics(greedy, [en for _, en in PAIRS])["bleu"] >= 90


def test_bad_inputs_translate(trained):
    work_dir, _ = trained
    translator = runner.load_run(work_dir).translator
    texts = tf.constant(["", "   ", "Der Hund läuft " * 5000, "猫が 😀 走る", PAIRS[0][0]])
    outputs = translator.translate(texts, with_attention=True)
    translations = [t.decode() for t in outputs["translation"].numpy()]
    assert translations[0] == "" and translations[1] == ""  # empty source -> empty translation
    limit = translator.max_length
    assert outputs["token_ids"].shape[1] <= limit  # long source truncated, output bounded
    attention = outputs["attention"].numpy()
    assert attention.shape[:2] == tuple(outputs["token_ids"].shape)
    np.testing.assert_allclose(attention[4].sum(-1)[outputs["token_ids"].numpy()[4] != 0], 1.0, atol=1e-4)


def test_decoding_stops_at_ratio_times_source_length_plus_extra_and_returns_what_it_has(trained):
    from seqapp.translator import Translator

    work_dir, _ = trained
    run = runner.load_run(work_dir)
    translator = run.translator
    texts = tf.constant([PAIRS[0][0], "Der Hund " * 40, ""])
    ids = translator.source_tokenizer.tokenize_padded(texts, translator.max_length)
    lengths = tf.reduce_sum(tf.cast(ids != 0, tf.int32), axis=1).numpy()
    decode = translator.decode
    expected = [min(int(np.ceil(decode.max_output_ratio * n)) + decode.max_output_extra, translator.max_length)
                if n else 0 for n in lengths]
    assert translator.max_output_lengths({"encoder_padding_mask": ids != 0}).numpy().tolist() == expected
    assert expected[1] == translator.max_length  # a long source: the overall limit
    full = translator.translate(texts[:1], beam_size=1)["token_ids"].numpy()[0]
    full = full[full != 0]
    assert len(full) > 3
    for beam_size in (1, 3):
        # ratio 0 and extra 2: every translation is cut at two tokens, and keeps them.
        cut = Translator(run.model, translator.source_tokenizer, translator.target_tokenizer,
                         max_length=translator.max_length,
                         decode=decode.model_copy(update={"max_output_ratio": 0.0, "max_output_extra": 2}))
        outputs = cut.translate(texts, beam_size=beam_size)
        token_ids = outputs["token_ids"].numpy()
        assert token_ids.shape[1] <= 2
        if beam_size == 1:  # greedy search: the first two tokens of the whole translation, cut short
            assert (token_ids != 0).sum(1).tolist() == [2, 2, 0]
            np.testing.assert_array_equal(token_ids[0], full[:2])
        else:  # the beam may also prefer a one-token hypothesis that ended
            assert (token_ids != 0).sum(1).tolist()[2] == 0 and min((token_ids != 0).sum(1)[:2]) >= 1
        assert outputs["translation"].numpy()[0] != b"" and outputs["translation"].numpy()[2] == b""


FRESH_PROCESS = r"""
import json, sys
import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the tokenizer ops, as TF Serving links them)
loaded = tf.saved_model.load(sys.argv[1])
texts = tf.constant(json.loads(sys.argv[2]))
out = {}
for name in ("serving_default", "translate_explain"):
    result = loaded.signatures[name](text=texts)
    out[name] = {key: value.numpy().tolist() for key, value in result.items()}
    out[name]["translation"] = [t.decode() for t in out[name]["translation"]]
    if "tokens" in out[name]:
        out[name]["tokens"] = [[t.decode() for t in row] for row in out[name]["tokens"]]
        out[name]["source_tokens"] = [[t.decode() for t in row] for row in out[name]["source_tokens"]]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The trained run exported once, as version 1 under `<tmp>/translation`."""
    return runner.export(trained[0], tmp_path_factory.mktemp("export") / "translation")


def test_export_round_trip_in_a_fresh_process(trained, exported):
    work_dir, _ = trained
    path = exported
    card = json.loads((path / "assets.extra" / "model_card.json").read_text())
    assert set(card["signatures"]) == {"serving_default", "translate_explain"}
    assert set(card["signatures"]["translate_explain"]["outputs"]) == {
        "translation", "score", "tokens", "source_tokens", "attention"}
    assert (path / "assets.extra" / "tf_serving_warmup_requests").exists()
    texts = [de for de, _ in PAIRS[:4]] + ["", "Ein Hund 😀"]
    result = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(path), json.dumps(texts)],
                            capture_output=True, text=True, check=True)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    translator = runner.load_run(work_dir).translator
    expected = translator.translate(tf.constant(texts), with_attention=True)
    for name in ("serving_default", "translate_explain"):
        assert out[name]["translation"] == [t.decode() for t in expected["translation"].numpy()]
        np.testing.assert_allclose(out[name]["score"], expected["score"].numpy(), atol=1e-4)
    np.testing.assert_allclose(np.array(out["translate_explain"]["attention"]), expected["attention"].numpy(),
                               atol=1e-4)
    assert out["serving_default"]["translation"][4] == ""


def test_eval_and_explain_commands(trained, tmp_path, capsys):
    work_dir, _ = trained
    source = tmp_path / "in.de"
    reference = tmp_path / "ref.en"
    source.write_text("".join(f"{de}\n" for de, _ in PAIRS), encoding="utf-8")
    reference.write_text("".join(f"{en}\n" for _, en in PAIRS), encoding="utf-8")
    assert cli_main(["eval", "--work-dir", str(work_dir), "--source", str(source), "--reference", str(reference),
                     "--output", str(tmp_path / "out.en")]) == 0
    bleu = float(capsys.readouterr().out.split("BLEU ")[1].split(",")[0])
    assert bleu >= 90
    translator = runner.load_run(work_dir).translator
    written = (tmp_path / "out.en").read_text(encoding="utf-8").splitlines()
    assert written == evaluation.translate_all(translator, [de for de, _ in PAIRS])
    reference.write_text("just one line\n", encoding="utf-8")
    assert cli_main(["eval", "--work-dir", str(work_dir), "--source", str(source), "--reference",
                     str(reference)]) == 2
    assert "has 16 lines but" in capsys.readouterr().err
    png = tmp_path / "attention.png"
    assert cli_main(["explain", PAIRS[5][0], "--work-dir", str(work_dir), "--out", str(png)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == evaluation.translate_all(translator, [PAIRS[5][0]])[0]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_embedded_server_translates_over_rest_and_grpc(trained, exported):
    from seqapp.serving import client as clients
    from seqapp.serving import server
    from seqapp.serving.process import free_port

    work_dir, _ = trained
    options = server.ServerOptions(port=free_port(), rest_api_port=free_port(), model_name="translation",
                                   model_base_path=str(exported.parent))
    texts = [de for de, _ in PAIRS[:3]] + [""]
    translator = runner.load_run(work_dir).translator
    expected = [t.decode() for t in translator.translate(tf.constant(texts))["translation"].numpy()]
    expected_attention = translator.translate(tf.constant(texts[:1]), with_attention=True)["attention"].numpy()
    model_server = server.ModelServer(options).start()
    try:
        for client in (clients.RestClient(f"http://127.0.0.1:{options.rest_api_port}"),
                       clients.GrpcClient(f"127.0.0.1:{options.port}")):
            with client:
                outputs = client.predict("translation", {"text": texts})
                explained = client.predict("translation", {"text": texts[:1]}, signature_name="translate_explain")
            assert [t.decode() if isinstance(t, bytes) else t for t in outputs["translation"]] == expected
            np.testing.assert_allclose(np.asarray(explained["attention"], np.float32),
                                       expected_attention, atol=1e-4)
    finally:
        model_server.stop()
