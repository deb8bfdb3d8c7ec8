"""init-config on a table with an image column (pixel arrays or files) writes the image-aware defaults a
folder with no config trains with: the CNN sized for the pixels, its hidden layers and training."""
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import lamina
from lamina import features
from lamina.data import read_folder
from lamina.features.image_defaults import cnn_options, folder_config, folder_training, suggested_settings
from lamina.init_config import infer_config


def digit_table(side: int, rows: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(side)
    return pd.DataFrame({"image": [rng.integers(0, 256, (side, side)).astype(np.uint8) for _ in range(rows)],
                         "label": [str(row % 3) for row in range(rows)]})


def test_init_config_sizes_the_cnn_and_training_for_8x8_and_28x28_arrays():
    small, notes = infer_config(digit_table(8), ["label"])
    image = small["inputs"][0]
    assert (image["size"], image["channels"], image["stages"]) == ([8, 8], 1, 2)  # 8 -> 4 pixels, not 8 -> 2
    assert image["augment"] == {"crop": 1} and image["depth"] == 2  # a shift of 2 is a quarter of the digit
    large, _ = infer_config(digit_table(28), ["label"])
    image = large["inputs"][0]
    assert (image["size"], image["channels"], image["augment"]) == ([28, 28], 1, {"crop": 2})
    assert "stages" not in image  # the default three: 28 -> 14 -> 7
    for config in (small, large):
        assert config["hidden"] == {"layers": 1, "size": 128, "dropout": 0.1}
        assert config["training"] == {**folder_training(60), "learning_rate": "auto"}
        lamina.load_config(config)
    assert any("image input 'image' suggests" in note for note in notes)


def test_a_table_of_image_files_gets_what_the_same_folder_gets(tmp_path):
    rng = np.random.default_rng(0)
    for position in range(40):
        label = "ab"[position % 2]
        (tmp_path / "photos" / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 12)).astype(np.uint8), "L").save(
            tmp_path / "photos" / label / f"{position}.png")
    frame = read_folder(tmp_path / "photos")
    folder = folder_config(frame)
    table, _ = infer_config(frame, ["label"])
    assert table["inputs"] == folder["inputs"] and folder["inputs"][0]["stages"] == 2
    assert table["hidden"] == {"layers": 3, "size": 256, "dropout": 0.1, **folder["hidden"]}
    assert {key: table["training"][key] for key in folder["training"]} == folder["training"]


@pytest.mark.parametrize("side, stages, crop", [(4, 1, 1), (7, 1, 1), (8, 2, 1), (15, 2, 1), (16, 3, 2),
                                                (28, 3, 2), (64, 3, 2)])
def test_cnn_stages_and_shifts_follow_the_shorter_side(side, stages, crop):
    options = cnn_options([side, 2 * side])
    assert options.get("stages", 3) == stages and options["augment"] == {"crop": crop}


def test_small_sets_take_smaller_batches_and_large_ones_ten_epochs():
    assert folder_training(200) == {"batch_size": 16, "epochs": 30}
    assert folder_training(1797) == {"batch_size": 128, "epochs": 25}
    assert folder_training(60_000) == {"batch_size": 128, "epochs": 10}
    assert "options" not in suggested_settings({"size": [224, 224], "encoder": "pretrained"}, 500)
    assert "hidden" not in suggested_settings({"size": [28, 28]}, 5000)  # a larger set: the generic layers
    assert suggested_settings({"size": [28, 28]}, 1797)["hidden"] == {"layers": 1, "size": 128}


def test_only_the_first_suggesting_input_sets_the_network_and_tables_keep_the_generic_one():
    rng = np.random.default_rng(1)
    frame = digit_table(8).assign(age=rng.integers(18, 90, 60), height=rng.normal(170, 10, 60))
    config, notes = infer_config(frame[["age", "image", "height", "label"]], ["label"])
    assert config["hidden"]["layers"] == 1 and config["training"]["epochs"] == folder_training(60)["epochs"]
    plain, notes = infer_config(frame[["age", "height", "label"]], ["label"])
    assert plain["hidden"] == {"layers": 3, "size": 256, "dropout": 0.1}  # init-config's generic ones
    assert not any("suggests" in note for note in notes)


@pytest.mark.parametrize("type_name", sorted(features.REGISTRY))
def test_every_type_suggests_only_known_parts(type_name):
    """The protocol's suggests: a dict of options, hidden and training keys the config schema accepts."""
    module = features.REGISTRY[type_name]
    suggestion = module.Feature.suggests({"size": [8, 8], "channels": 1}, 100)  # what an image sniff gives
    assert isinstance(suggestion, dict) and set(suggestion) <= {"options", "hidden", "training"}
    if suggestion:
        lamina.load_config({"inputs": [{"name": "x", "type": type_name, **suggestion.get("options", {})}],
                            "outputs": [{"name": "y", "type": "category"}],
                            "hidden": suggestion.get("hidden", {}), "training": suggestion.get("training", {})})
