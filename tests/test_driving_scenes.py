"""The driving_scenes generator: pybullet scenes that are the same for a seed whatever their number,
boxes that are the exact extent of each object's visible pixels, the cache, and clear errors."""
import contextlib
import io
import sys

import numpy as np
import pytest

import lamina
from lamina.cli import main
from lamina.datasets import driving

pytest.importorskip("pybullet")

SIZE = 64


@pytest.fixture(scope="module")
def scenes() -> list:
    return driving.render(10, seed=0, size=SIZE)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setattr(driving, "CACHE_FOLDER", tmp_path / "driving_scenes")
    return tmp_path / "driving_scenes"


def same(first: list, second: list) -> bool:
    return len(first) == len(second) and all(
        np.array_equal(a.image, b.image) and a.boxes == b.boxes and a.split == b.split
        and np.array_equal(a.instances, b.instances) for a, b in zip(first, second))


def test_a_seed_gives_the_same_scenes_and_scene_i_does_not_depend_on_how_many_are_made(scenes):
    assert same(driving.render(10, seed=0, size=SIZE), scenes)
    assert same(driving.render(5, seed=0, size=SIZE), scenes[:5])
    assert same(driving.render(5, seed=0, size=SIZE, start=5), scenes[5:])
    other = driving.render(3, seed=1, size=SIZE)
    assert all(not np.array_equal(a.image, b.image) for a, b in zip(other, scenes))


def test_images_are_varied_colour_arrays(scenes):
    for scene in scenes:
        assert scene.image.shape == (SIZE, SIZE, 3) and scene.image.dtype == np.uint8
        assert scene.split in ("train", "validation", "test")
    assert not np.array_equal(scenes[0].image, scenes[1].image)
    assert sum(len(scene.boxes) for scene in scenes) >= 10  # 2..10 objects placed per scene


def test_each_box_is_the_extent_of_its_objects_visible_pixels(scenes):
    for scene in scenes:
        assert set(np.unique(scene.instances)) <= set(range(-1, len(scene.boxes)))
        for number, (x_min, y_min, x_max, y_max, label) in enumerate(scene.boxes):
            assert label in driving.CLASSES
            assert 0 <= x_min < x_max <= SIZE and 0 <= y_min < y_max <= SIZE
            rows, columns = np.nonzero(scene.instances == number)
            assert len(rows) >= driving.MIN_PIXELS
            assert (x_min, y_min, x_max, y_max) == (columns.min(), rows.min(), columns.max() + 1, rows.max() + 1)


def test_objects_differ_in_colour_from_what_surrounds_them(scenes):
    """An object's pixels are not the road or the sky behind it: their mean colour differs from the
    mean colour of the background pixels in a band around its box."""
    contrasts = []
    for scene in scenes:
        for number, (x_min, y_min, x_max, y_max, _) in enumerate(scene.boxes):
            around = np.zeros(scene.instances.shape, dtype=bool)
            around[max(int(y_min) - 3, 0):int(y_max) + 3, max(int(x_min) - 3, 0):int(x_max) + 3] = True
            around &= scene.instances == -1
            if around.sum() >= 10:
                inside = scene.image[scene.instances == number].astype(float).mean(axis=0)
                contrasts.append(np.abs(inside - scene.image[around].astype(float).mean(axis=0)).max())
    assert len(contrasts) >= 10 and np.median(contrasts) > 10  # of 0..255


def test_driving_scenes_frame_is_cached_and_read_back(cache, monkeypatch, scenes):
    first = driving.driving_scenes(count=4, seed=0, size=SIZE)
    assert list(first.columns) == ["image", "boxes", "split"] and len(first) == 4
    assert [row for row in first["boxes"]] == [scene.boxes for scene in scenes[:4]]
    assert all(np.array_equal(image, scene.image) for image, scene in zip(first["image"], scenes))
    assert driving.cache_file(4, 0, SIZE).is_file() and driving.cache_file(4, 0, SIZE).parent == cache

    def no_rendering(*args, **kwargs):
        raise AssertionError("the cached scenes should have been read")

    monkeypatch.setattr(driving, "render", no_rendering)
    second = driving.driving_scenes(count=4, seed=0, size=SIZE)
    assert second["boxes"].tolist() == first["boxes"].tolist() and second["split"].tolist() == first["split"].tolist()
    assert all(np.array_equal(a, b) for a, b in zip(first["image"], second["image"]))


def test_a_damaged_cache_file_says_to_delete_it(cache):
    cache.mkdir(parents=True)
    driving.cache_file(3, 0, SIZE).write_bytes(b"not a zip file")
    with pytest.raises(lamina.DataError, match="delete the file"):
        driving.driving_scenes(count=3, seed=0, size=SIZE)


@pytest.mark.parametrize("arguments, name", [({"count": 0}, "count"), ({"size": 8}, "size"), ({"seed": -1}, "seed"),
                                             ({"size": "64"}, "size"), ({"count": 2.5}, "count")])
def test_bad_arguments_are_named(arguments, name):
    with pytest.raises(lamina.DataError, match=f"driving_scenes: {name} must be"):
        driving.driving_scenes(**arguments)


def test_without_pybullet_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "pybullet", None)  # makes `import pybullet` fail
    with pytest.raises(lamina.DataError, match=r"pip install 'lamina\[simulation\]'"):
        driving.render(1, size=SIZE)


def test_pybullet_prints_nothing_while_loading(capfd):
    driving.render(1, size=SIZE)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_registry_entry_and_cli_list(cache):
    item = lamina.datasets.info("driving_scenes")
    assert (item.task, item.target) == ("object detection", "boxes") and "SIMULATED" in item.description
    assert item.locate() is None  # nothing cached in the empty cache folder
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["datasets", "list"]) == 0
    assert "driving_scenes" in out.getvalue() and "object detection" in out.getvalue()


def test_an_unwritable_cache_still_gives_the_scenes(tmp_path, monkeypatch, capsys, scenes):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setattr(driving, "CACHE_FOLDER", blocker / "driving_scenes")
    table = driving.driving_scenes(count=2, seed=0, size=SIZE)
    assert table["boxes"].tolist() == [scene.boxes for scene in scenes[:2]]
    assert "could not cache" in capsys.readouterr().err


def test_a_cache_file_of_other_shapes_says_to_delete_it(cache):
    cache.mkdir(parents=True)
    driving._save(driving.cache_file(5, 0, SIZE), driving.frame(driving.render(2, seed=0, size=SIZE)))
    with pytest.raises(lamina.DataError, match=r"2, 64, 64, 3.*for 5 scenes.*delete the file"):
        driving.driving_scenes(count=5, seed=0, size=SIZE)
