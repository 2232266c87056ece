"""The captioning task end to end: the user's image folder and captions, an overfitted captioner whose
export captions raw PNG and JPEG bytes, served by `seqapp serve` over REST (`{"b64"}`) and gRPC, and every
kind of bad image a client can send."""

import base64
import io
import itertools
import json

import numpy as np
import pytest
import tensorflow as tf
import yaml
from PIL import Image

from seqapp import config
from seqapp import runner
from seqapp.cli import main as cli_main
from seqapp.datasets.shapes_captions import grammar
from seqapp.datasets.shapes_captions import scenes
from seqapp.errors import ConfigError
from seqapp.serving.process import ServeProcess

# Twelve scenes of one or two objects, each with one caption; the captions file writes it 32 times, so that
# an epoch takes 24 steps and batch norm's moving statistics settle in few epochs.
SCENES = [scene for scene in itertools.islice(scenes.sample_scenes(11, 40), 40) if len(scene.objects) <= 2][:12]


def encoded(picture, kind="PNG", **options):
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format=kind, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """`(folder, captions.tsv)`: the scenes as PNG files and their captions."""
    folder = tmp_path_factory.mktemp("captioning_data")
    (folder / "images").mkdir()
    lines = ["image\tcaption"]
    for index, scene in enumerate(SCENES):
        (folder / "images" / f"{index}.png").write_bytes(encoded(scenes.render(scene)))
        lines += [f"{index}.png\t{grammar.realizations(scene)[0]}"] * 32
    (folder / "captions.tsv").write_text("\n".join(lines) + "\n")
    return folder, folder / "captions.tsv"


def definition(folder, **model):
    raw = {
        "task": "captioning", "seed": 5,
        "data": {"format": "captions", "images": "images", "train": "captions.tsv", "validation": "captions.tsv",
                 "captions_per_image": 32},
        "tokenizer": {"vocab_size": 100, "min_count": 1},
        "pipeline": {"max_length": 16, "batching": "batch_max", "batch_size": 16},
        "model": {"family": "transformer", "embedding_dim": 32, "num_layers": 1, "num_heads": 2, "ffn_dim": 64,
                  "encoder_filters": 8, "dropout": 0.0, **model},
        "train": {"epochs": 20, "learning_rate": 0.003, "early_stopping_patience": 20},
        "decode": {"beam_size": 2},
    }
    path = folder / "captioning.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def overfitted(image_folder, seqapp_cache_dir):
    """`(run folder, export base path)` of a Transformer captioner trained until it knows the twelve scenes."""
    folder, _ = image_folder
    work_dir = folder / "run"
    runner.train(config.load_definition(definition(folder)), work_dir, verbose=0)
    base_path = folder / "saved_models" / "captioning"
    runner.export(work_dir, base_path)
    return work_dir, base_path


def test_the_overfitted_set_is_captioned_exactly_through_the_export(overfitted):
    _, base_path = overfitted
    loaded = tf.saved_model.load(str(base_path / "1"))
    # The JPEG is near-lossless (no chroma subsampling): the export must read it as the PNG. A lossier one
    # may rightly change a caption, since the tiny model reads a small object's colour from a few pixels;
    # in one run even this one flipped a single scene (a second object dropped from its caption).
    captioned = {}
    for kind, options in (("PNG", {}), ("JPEG", {"quality": 100, "subsampling": 0})):
        payload = tf.constant([encoded(scenes.render(scene), kind, **options) for scene in SCENES])
        outputs = loaded.signatures["serving_default"](image_bytes=payload)
        captions = captioned[kind] = [c.decode() for c in outputs["caption"].numpy()]
        exact = np.mean([caption in grammar.realizations(scene) for caption, scene in zip(captions, SCENES)])
        assert exact >= 0.9, (kind, list(zip(captions, [grammar.realizations(s)[0] for s in SCENES])))
        assert outputs["score"].shape == (len(SCENES),)
    assert sum(jpeg == png for jpeg, png in zip(captioned["JPEG"], captioned["PNG"])) >= len(SCENES) - 1
    explained = loaded.signatures["caption_explain"](image_bytes=payload[:2])
    steps = explained["tokens"].shape[1]
    assert explained["attention"].shape == (2, steps, 64)  # 64x64 images, three poolings: 8x8 positions
    real = explained["tokens"].numpy() != b""
    np.testing.assert_allclose(explained["attention"].numpy().sum(-1)[real], 1.0, atol=1e-4)
    assert not explained["attention"].numpy()[~real].any()


def test_evaluation_reports_caption_metrics_and_eval_reads_user_files(overfitted, image_folder, capsys):
    work_dir, _ = overfitted
    metrics = json.loads((work_dir / "metrics.json").read_text())["validation"]
    assert metrics["exact_match"] >= 0.9 and metrics["bleu4"] >= 0.9 and metrics["images"] == len(SCENES)
    assert "slot_accuracy" not in metrics  # the user's captions come without scenes
    # Checkpointing watched the exact match of decoded validation captions, logged every epoch.
    history = (work_dir / "history.csv").read_text().splitlines()
    assert "val_exact_match" in history[0].split(",") and len(history) > 2
    folder, captions = image_folder
    assert cli_main(["eval", "--work-dir", str(work_dir), "--data", str(captions), "--images",
                     str(folder / "images")]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("captions.tsv: BLEU-4 ") and f"({len(SCENES)} images)" in line
    assert cli_main(["eval", "--work-dir", str(work_dir), "--data", str(captions)]) == 2
    assert "--images FOLDER" in capsys.readouterr().err


def test_cached_and_uncached_decoding_agree_and_beam_one_is_greedy(overfitted):
    run = runner.load_run(overfitted[0])
    pixels = tf.constant(np.stack([scenes.render(scene) for scene in SCENES[:6]]), tf.float32) / 255.0
    captioner = run.captioner
    cached = captioner.caption_pixels(pixels, beam_size=1)
    uncached = captioner.caption_pixels(pixels, beam_size=1, cached=False)
    np.testing.assert_array_equal(cached["token_ids"].numpy(), uncached["token_ids"].numpy())
    np.testing.assert_allclose(cached["score"].numpy(), uncached["score"].numpy(), rtol=1e-4)
    beam = captioner.caption_pixels(pixels, beam_size=3)
    assert beam["caption"].shape == (6,)


def test_explain_draws_the_attention_over_the_image(overfitted, image_folder, tmp_path, capsys):
    work_dir, _ = overfitted
    folder, _ = image_folder
    png = tmp_path / "attention.png"
    assert cli_main(["explain", "--image", str(folder / "images" / "0.png"), "--work-dir", str(work_dir),
                     "--out", str(png)]) == 0
    caption = capsys.readouterr().out.splitlines()[0]
    assert caption in grammar.realizations(SCENES[0])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    not_an_image = tmp_path / "x.png"
    not_an_image.write_bytes(b"hello")
    assert cli_main(["explain", "--image", str(not_an_image), "--work-dir", str(work_dir)]) == 2
    assert "not a JPEG, PNG, GIF or BMP image" in capsys.readouterr().err
    assert cli_main(["explain", "some text", "--work-dir", str(work_dir)]) == 2
    assert "give --image PATH" in capsys.readouterr().err


@pytest.fixture(scope="module")
def served(overfitted, tmp_path_factory):
    """`seqapp serve` serving the overfitted export as "captioning"."""
    _, base_path = overfitted
    log = tmp_path_factory.mktemp("captioning_serve") / "serve.log"
    process = ServeProcess(["--model_name", "captioning", "--model_base_path", base_path], log).wait_ready()
    yield process
    assert process.alive(), process.log_text()[-3000:]
    process.stop()


def rest_predict(server, instances, signature="serving_default"):
    import urllib.error
    import urllib.request

    body = json.dumps({"signature_name": signature, "instances": instances}).encode()
    request = urllib.request.Request(f"{server.rest_url}/v1/models/captioning:predict", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def grpc_predict(server, values):
    import grpc
    from tensorflow_serving.apis import predict_pb2
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "captioning"
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(values, dtype=tf.string))
    with grpc.insecure_channel(server.grpc_target, options=[("grpc.max_send_message_length", 64 << 20)]) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=120)
        except grpc.RpcError as error:
            return error.code(), error.details()
        return grpc.StatusCode.OK, [c.decode() for c in tf.make_ndarray(response.outputs["caption"])]


def test_served_over_rest_b64_and_grpc(served):
    pictures = [encoded(scenes.render(scene)) for scene in SCENES[:3]]
    status, answer = rest_predict(served, [{"b64": base64.b64encode(p).decode()} for p in pictures])
    assert status == 200, answer
    rest = [row["caption"] for row in answer["predictions"]]
    code, grpc_captions = grpc_predict(served, pictures)
    assert code.name == "OK" and grpc_captions == rest
    assert sum(caption in grammar.realizations(scene) for caption, scene in zip(rest, SCENES)) >= 2
    status, answer = rest_predict(served, [{"b64": base64.b64encode(pictures[0]).decode()}], "caption_explain")
    assert status == 200 and len(answer["predictions"][0]["attention"][0]) == 64


def bad_images():
    """`(name, bytes, expected)`: expected is "caption" or a fragment of the INVALID_ARGUMENT message."""
    good = scenes.render(SCENES[0])
    jpeg = encoded(good, "JPEG", quality=90)
    rgba = np.dstack([good, np.full(good.shape[:2], 128, np.uint8)])
    frames = [Image.fromarray(good), Image.fromarray(255 - good)]
    gif = io.BytesIO()
    frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:])
    sixteen = io.BytesIO()
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(sixteen, format="PNG")
    return [
        ("not an image", b"hello, world", "not a JPEG, PNG, GIF or BMP image"),
        ("empty", b"", "image_bytes is empty"),
        ("truncated JPEG", jpeg[: len(jpeg) // 2], "JPEG"),
        ("grayscale", encoded(good[:, :, 0]), "caption"),
        ("RGBA", encoded(rgba), "caption"),
        ("palette", _palette_png(good), "caption"),
        ("16-bit PNG", sixteen.getvalue(), "caption"),
        ("animated GIF", gif.getvalue(), "caption"),
        ("1x1", encoded(np.zeros([1, 1, 3], np.uint8)), "caption"),
        ("4000x4000", encoded(np.full([4000, 4000, 3], 200, np.uint8), "JPEG"), "caption"),
        ("BMP", encoded(good, "BMP"), "caption"),
    ]


def _palette_png(picture):
    buffer = io.BytesIO()
    Image.fromarray(picture).convert("P", palette=Image.Palette.ADAPTIVE).save(buffer, format="PNG")
    return buffer.getvalue()


def test_every_bad_image_gets_a_caption_or_invalid_argument_and_the_server_lives(served):
    for name, payload, expected in bad_images():
        status, answer = rest_predict(served, [{"b64": base64.b64encode(payload).decode()}])
        code, grpc_answer = grpc_predict(served, [payload])
        if expected == "caption":
            assert status == 200 and isinstance(answer["predictions"][0]["caption"], str), (name, answer)
            assert code.name == "OK", (name, grpc_answer)
        else:
            assert status == 400 and expected in answer["error"], (name, status, answer)
            assert code.name == "INVALID_ARGUMENT" and expected in grpc_answer, (name, code, grpc_answer)
    good = encoded(scenes.render(SCENES[1]))
    mixed = [{"b64": base64.b64encode(p).decode()} for p in (good, b"not an image", good)]
    status, answer = rest_predict(served, mixed)
    assert status == 400 and "batch index 1" in answer["error"], answer
    assert served.alive()
    status, answer = rest_predict(served, [{"b64": base64.b64encode(good).decode()}])
    assert status == 200, answer  # still serving


def test_predict_command_sends_image_files(served, image_folder, capsys):
    folder, _ = image_folder
    paths = [str(folder / "images" / f"{i}.png") for i in range(2)]
    for target in (["--rest", served.rest_url], ["--grpc", served.grpc_target]):
        args = ["predict", "--model", "captioning", *target]
        assert cli_main([*args, *itertools.chain.from_iterable(("--image", p) for p in paths)]) == 0
        outputs = json.loads(capsys.readouterr().out)
        assert len(outputs["caption"]) == 2 and len(outputs["score"]) == 2


def test_karpathy_split_json_gives_each_split_its_images(image_folder, seqapp_cache_dir, tmp_path):
    from seqapp import tasks

    folder, _ = image_folder
    entries = [{"filename": f"{i}.png", "split": split, "sentences": [{"raw": c} for c in grammar.realizations(s)[:3]]}
               for i, (s, split) in enumerate(zip(SCENES, ["train"] * 6 + ["restval", "val", "val"] + ["test"] * 3))]
    (tmp_path / "dataset_shapes.json").write_text(json.dumps({"images": entries}))
    raw = {"task": "captioning", "data": {"format": "karpathy", "images": str(folder / "images"),
                                          "train": "dataset_shapes.json", "captions_per_image": 2},
           "tokenizer": {"vocab_size": 100, "min_count": 1}}
    (tmp_path / "k.yaml").write_text(yaml.safe_dump(raw))
    inputter = tasks.get("captioning").inputter(config.load_definition(tmp_path / "k.yaml"))
    counts = {split: len(list(inputter.examples(split))) for split in ("train", "validation", "test")}
    assert counts == {"train": 7, "validation": 2, "test": 3}
    first = next(iter(inputter.examples("train")))
    assert [c.decode() for c in first["captions"].numpy()] == grammar.realizations(SCENES[0])[:3]
    np.testing.assert_array_equal(first["image"].numpy(), scenes.render(SCENES[0]))
    # Two of the three captions of each training image, as teacher-forced examples.
    assert sum(int(f["image"].shape[0]) for f, _ in inputter.dataset("train", training=False)) == 14

    def training_captions(choice):
        raw["data"]["caption_choice"] = choice
        (tmp_path / "k.yaml").write_text(yaml.safe_dump(raw))
        chooser = tasks.get("captioning").inputter(config.load_definition(tmp_path / "k.yaml"))
        tokenizer = chooser.tokenizers["caption"]
        return [grammar.normalize(tokenizer.detokenize(ex["target_ids"][None, :-1]).numpy()[0].decode())
                for ex in chooser.encode(chooser.examples("train")).as_numpy_iterator()]

    train_scenes = SCENES[:7]  # "train" and "restval"
    # "first": each image's first two captions, as listed; "random": two of its three, drawn with the seed.
    assert training_captions("first") == [c for s in train_scenes for c in grammar.realizations(s)[:2]]
    drawn = training_captions("random")
    assert drawn == training_captions("random") and drawn != training_captions("first")
    assert all(set(drawn[2 * i:2 * i + 2]) <= set(grammar.realizations(s)[:3]) for i, s in enumerate(train_scenes))


@pytest.mark.parametrize("data, key, fragment", [
    ({"format": "captions", "train": "c.tsv"}, "data.images", "folder of their images"),
    ({"format": "karpathy", "images": "i", "train": "k.json", "validation": "v.json"}, "data.validation",
     "give it as data.train only"),
])
def test_captioning_definition_errors_name_the_key(data, key, fragment):
    with pytest.raises(ConfigError, match=fragment) as error:
        config.validate({"task": "captioning", "data": data})
    assert error.value.key == key


def test_backbone_weights_need_a_backbone():
    with pytest.raises(ConfigError, match="set model.backbone"):
        config.validate({"task": "captioning", "data": {"dataset": "shapes_captions"},
                         "model": {"backbone_weights": "w.h5"}})


def test_caption_metrics_check_what_a_caption_says():
    from seqapp import evaluation

    held = next(s for s in scenes.sample_scenes(4, 50, heldout="require") if len(s.objects) == 2)
    plain = SCENES[0]
    captions = [grammar.realizations(held)[0], grammar.realizations(plain)[0]]
    references = [grammar.realizations(held), grammar.realizations(plain)]
    perfect = evaluation.caption_metrics([c.upper() + "." for c in captions], references, [held, plain])
    assert perfect["exact_match"] == 1.0 and perfect["slot_accuracy"] == 1.0
    assert perfect["heldout_pair_recall"] == 1.0 and perfect["bleu4"] == pytest.approx(1.0)
    # Right words in a wrong caption: swap the held-out pair's colour for another.
    colour, shape = grammar.heldout_pairs(held)[0]
    other = next(c for c in scenes.COLOURS if c != colour)
    wrong = captions[0].replace(f"{colour} {shape}", f"{other} {shape}")
    metrics = evaluation.caption_metrics([wrong, "a b c"], references, [held, plain])
    assert metrics["exact_match"] == 0.0 and metrics["slot_accuracy"] == 0.0
    assert metrics["heldout_pair_recall"] == 0.0 and 0 < metrics["bleu4"] < 1
    assert "slot_accuracy" not in evaluation.caption_metrics(captions, references)


def test_cider_d_by_hand():
    from seqapp import evaluation

    # Two images whose references share "a b": those n-grams weigh nothing (idf log(2/2) = 0).
    # Image 1 equals its reference: cosine 1 at n = 1 ("c"), 2 ("b c") and 3 ("a b c"), no 4-grams:
    # (1 + 1 + 1 + 0) / 4 * 10 = 7.5. Image 2 shares only what weighs nothing: 0. Mean 3.75.
    hypotheses, references = ["a b c", "a b d"], [["a b c"], ["a b x"]]
    score = evaluation.cider_d(hypotheses, references)
    assert score == pytest.approx(3.75)
    assert evaluation.cider_d(["a b c", "a b x"], references) > score
