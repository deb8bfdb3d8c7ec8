"""The `boxes` output (object detection): cell parsing and its errors, COCO files, the CenterNet
targets, loss, decoding and mAP, and a small model trained on coloured squares end to end (predict
in the images' own pixels, save/load, serve)."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import lamina
from lamina.errors import ConfigError, DataError
from lamina.features import boxes_head
from lamina.features.base import FeatureMaps
from lamina.features.image_encoders import Encoder
from lamina.features.boxes_coco import is_coco, read_coco

COLOURS = {"red": (230, 40, 40), "blue": (40, 60, 230)}


def squares(rows: int, size: int = 64, seed: int = 0) -> pd.DataFrame:
    """Noise images of `size` pixels with 1-2 red or blue squares (side 12-21 px) and their boxes."""
    rng = np.random.default_rng(seed)
    images, cells = [], []
    for _ in range(rows):
        image = rng.integers(0, 90, (size, size, 3)).astype(np.uint8)
        boxes = []
        for _ in range(int(rng.integers(1, 3))):
            side = int(rng.integers(12, 22))
            x, y = (int(value) for value in rng.integers(0, size - side, 2))
            label = str(rng.choice(list(COLOURS)))
            image[y:y + side, x:x + side] = COLOURS[label]
            boxes.append([x, y, x + side, y + side, label])
        images.append(image)
        cells.append(boxes)
    return pd.DataFrame({"image": pd.Series(images, dtype=object), "boxes": pd.Series(cells, dtype=object)})


CONFIG = {"inputs": [{"name": "image", "type": "image", "size": 48, "width": 16, "augment": {"flip": True}}],
          "outputs": [{"name": "boxes", "type": "boxes", "width": 32}],
          "hidden": {"layers": 0},
          "training": {"epochs": 8, "batch_size": 32, "learning_rate": 0.003, "seed": 0}}


@pytest.fixture(scope="module")
def trained():
    """200 images of 64x64 pixels read at 48x48: the boxes are scaled with them."""
    torch.set_num_threads(1)
    frame = squares(200)
    return lamina.Model(CONFIG).fit(frame, quiet=True), frame


# ---- cells and their errors ----
@pytest.mark.parametrize("cell, problem", [
    ("[[1, 2, 3", "is not JSON"),
    ([[1, 2, 3, 4]], "box 0 is 4 values, not 5"),
    ([[1, 2, 3, 4, "car"], [9, 2, 3, 4, "car"]], "box 1 .* x_max < x_min"),
    ([[1, 2, float("nan"), 4, "car"]], "not a finite number"),
    ([[1, 2, 3, 4, None]], "label None"),
    ("{\"a\": 1}", "not a list of boxes"),
    ([[10, 10, 70, 20, "car"]], "box 0 .* reaches outside its 64x64 image"),
])
def test_bad_cells_name_the_row_and_column_and_how_to_fix(cell, problem):
    frame = squares(8)
    frame.at[5, "boxes"] = cell
    feature = lamina.features.build(lamina.config.OUTPUT_MODELS["boxes"](name="boxes", type="boxes"))
    with pytest.raises(DataError, match=f"column 'boxes' row 5: .*{problem}") as error:
        feature.fit(frame[["boxes", "image"]])
        feature.target(frame[["boxes", "image"]])
    assert "[x_min, y_min, x_max, y_max, label]" in str(error.value) or "fix" in str(error.value)


def test_json_strings_and_lists_give_the_same_target_as_fractions_of_the_image():
    frame = squares(6, size=40)
    as_text = frame.assign(boxes=frame["boxes"].map(json.dumps))
    feature = lamina.features.build(lamina.config.OUTPUT_MODELS["boxes"](name="boxes", type="boxes"))
    feature.fit(frame)
    target = feature.target(frame)
    assert torch.equal(target, feature.target(as_text))
    x0, y0, x1, y1, label = frame["boxes"][0][0]
    np.testing.assert_allclose(target[0, 0, :4].numpy(), np.array([x0, y0, x1, y1]) / 40, rtol=1e-6)
    assert feature.labels[int(target[0, 0, 4])] == label
    assert (target[:, :, 4] == boxes_head.PADDING).any()  # rows with one box are padded to the longest


def test_boxes_are_an_output_only_and_need_their_image_input_without_geometric_augmentation():
    frame = squares(40)
    with pytest.raises(ConfigError, match="boxes"):
        lamina.Model({"inputs": [{"name": "boxes", "type": "boxes"}], "outputs": [{"name": "image", "type": "number"}]})
    no_image = {**CONFIG, "outputs": [{"name": "boxes", "type": "boxes", "image": "photo"}]}
    with pytest.raises(ConfigError, match="image input 'photo'"):
        lamina.Model(no_image).fit(frame.assign(photo=frame["image"]).drop(columns="image")
                                   .assign(image=frame["image"]), quiet=True)
    moved = {**CONFIG, "inputs": [{**CONFIG["inputs"][0], "augment": {"crop": 4, "flip": True}}]}
    with pytest.raises(ConfigError, match="augment.*away from their boxes"):
        lamina.Model(moved).fit(frame, quiet=True)
    odd = {**CONFIG, "inputs": [{**CONFIG["inputs"][0], "size": 50}]}
    with pytest.raises(ConfigError, match="not a multiple of its feature map's stride 4"):
        lamina.Model(odd).fit(frame, quiet=True)


# ---- COCO ----
def write_coco(folder, images_folder: str = "images") -> None:
    (folder / images_folder).mkdir(parents=True, exist_ok=True)
    for name, size in (("a.png", (40, 30)), ("b.png", (20, 20))):
        Image.new("RGB", size, (10, 20, 30)).save(folder / images_folder / name)
    data = {"info": {"year": 2024},
            "images": [{"id": 7, "file_name": "a.png", "width": 40, "height": 30},
                       {"id": 9, "file_name": "b.png", "width": 20, "height": 20}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [5, 6, 10, 4], "iscrowd": 0},
                            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 40, 30], "iscrowd": 1},
                            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [1.5, 2, 3, 3]}],
            "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]}
    (folder / "instances.json").write_text(json.dumps(data, indent=1))  # pretty-printed: one object, many lines


def test_coco_file_reads_as_one_row_per_image_with_corner_boxes(tmp_path):
    write_coco(tmp_path)
    frame, source = lamina.data.read_table(tmp_path / "instances.json")
    assert "COCO" in source and list(frame.columns) == ["image", "boxes"]
    assert frame["image"].tolist() == [str((tmp_path / "images" / name).resolve()) for name in ("a.png", "b.png")]
    assert frame["boxes"].tolist() == [[[5.0, 6.0, 15.0, 10.0, "car"], [1.5, 2.0, 4.5, 5.0, "person"]], []]
    assert lamina.data.chunkable_format(tmp_path / "instances.json") is None  # read whole, never as JSON lines
    lines = tmp_path / "rows.json"
    lines.write_text('{"images": 1, "x": 2}\n{"images": 3, "x": 4}\n')
    assert not is_coco(lines)
    elsewhere = read_coco(tmp_path / "instances.json", images=tmp_path / "nowhere")
    assert elsewhere["image"].tolist() == ["a.png", "b.png"]  # left relative, for the image input's root:


def test_a_model_trains_on_a_coco_file_and_a_bad_one_is_named(tmp_path):
    write_coco(tmp_path, images_folder="pictures")  # not images/: the paths are relative to root:
    config = {"inputs": [{"name": "image", "type": "image", "size": 16, "width": 4, "stages": 2,
                          "root": str(tmp_path / "pictures")}],
              "outputs": [{"name": "boxes", "type": "boxes", "width": 8, "root": str(tmp_path / "pictures")}],
              "hidden": {"layers": 0}, "split": {"ratios": [1.0, 0.0, 0.0]},
              "training": {"epochs": 1, "batch_size": 2}}
    model = lamina.Model(config).fit(str(tmp_path / "instances.json"), quiet=True)
    predicted = model.predict(str(tmp_path / "instances.json"))
    assert len(predicted) == 2 and all(isinstance(row, list) for row in predicted["boxes"])
    broken = json.loads((tmp_path / "instances.json").read_text())
    broken["annotations"][0]["bbox"] = [1, 2, 3]
    (tmp_path / "instances.json").write_text(json.dumps(broken))
    with pytest.raises(DataError, match=r"annotations\[0\]: bbox \[1, 2, 3\] is not \[x, y, width, height\]"):
        lamina.data.read_table(tmp_path / "instances.json")


# ---- targets, loss, decoding, mAP ----
def test_targets_decode_back_to_the_boxes_within_a_pixel_at_stride_4():
    size, grid = 96, 24
    rng = np.random.default_rng(1)
    corners = rng.uniform(0, 60, (2, 3, 2))
    sides = rng.uniform(6, 30, (2, 3, 2))
    boxes = np.concatenate([corners, corners + sides, rng.integers(0, 2, (2, 3, 1))], axis=2) / \
        [size, size, size, size, 1]
    boxes[1, 2] = boxes_head.PADDING  # the second image has two boxes
    targets = boxes_head.encode(torch.tensor(boxes, dtype=torch.float32), 2, (grid, grid))
    assert targets["heat"].shape == (2, 2, grid, grid) and int(targets["heat"].eq(1).sum()) == 5
    output = torch.zeros(2, 6, grid, grid)
    output[:, :2] = torch.logit(targets["heat"].clamp(1e-4, 1 - 1e-4))
    regression = torch.cat([targets["size"], targets["offset"]], dim=2)  # (B, M, 4)
    for image in range(2):
        for slot in np.flatnonzero(targets["mask"][image].numpy()):
            cell = int(targets["index"][image, slot])
            output[image, 2:, cell // grid, cell % grid] = regression[image, slot]
    found = boxes_head.detect(output, 10).numpy()
    for image in range(2):
        truth = boxes[image][boxes[image][:, 4] != boxes_head.PADDING]
        best = found[image][found[image][:, 4] > 0.99]  # the peaks: exactly 1 at each centre
        assert len(best) == len(truth)
        for box in truth:
            match = best[np.argmin(np.abs(best[:, :4] - box[:4]).sum(axis=1))]
            assert np.abs(match[:4] - box[:4]).max() * size < 1.0 and match[5] == box[4]


def ideal_output(boxes: np.ndarray, classes: int, grid: int) -> torch.Tensor:
    """The head output (B, K + 4, grid, grid) a perfect model gives for boxes (B, M, 5) as fractions."""
    targets = boxes_head.encode(torch.tensor(boxes, dtype=torch.float32), classes, (grid, grid))
    output = torch.zeros(len(boxes), classes + 4, grid, grid)
    output[:, :classes] = torch.logit(targets["heat"].clamp(1e-4, 1 - 1e-4))
    regression = torch.cat([targets["size"], targets["offset"]], dim=2)  # (B, M, 4)
    for image in range(len(boxes)):
        for slot in np.flatnonzero(targets["mask"][image].numpy()):
            cell = int(targets["index"][image, slot])
            output[image, classes:, cell // grid, cell % grid] = regression[image, slot]
    return output


def test_findings_on_mirrored_images_are_mirrored_back_exactly():
    """Flip augmentation with boxes: the head's output for a mirrored image, mirrored back, is the
    output for the image itself (heat maps, sizes, and x offsets within a cell as 1 - offset)."""
    rng = np.random.default_rng(4)
    corners = rng.uniform(0.05, 0.6, (3, 2, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(0.03, 0.3, (3, 2, 2)), rng.integers(0, 3, (3, 2, 1))],
                           axis=2)
    mirror = boxes.copy()
    mirror[..., 0], mirror[..., 2] = 1 - boxes[..., 2], 1 - boxes[..., 0]
    output, mirrored_output = ideal_output(boxes, 3, 24), ideal_output(mirror, 3, 24)
    flipped = torch.tensor([True, False, True])
    back = boxes_head.unmirror(torch.where(flipped[:, None, None, None], mirrored_output, output), flipped)
    torch.testing.assert_close(back[:, :3], output[:, :3], atol=0, rtol=0)  # the heat maps: only flipped
    for found, truth in zip(boxes_head.detect(back, 4).numpy(), boxes_head.detect(output, 4).numpy()):
        found, truth = (np.array(sorted(rows[rows[:, 4] > 0.99].tolist())) for rows in (found, truth))  # the peaks
        assert len(truth) == 2 and np.abs(found - truth).max() < 1e-5  # offsets: 1 - (1 - x) in float32


def test_the_head_adds_the_encoders_finer_maps_on_its_way_to_the_output_stride():
    levels = ((8, 1), (16, 2), (32, 4))  # a three-stage CNN with the full-resolution stem
    head = boxes_head.Head(levels, hidden_size=5, classes=2, width=12, stride=2)
    assert head.stride == 2 and set(head.lateral) == {"0"} and head.lateral["0"].in_channels == 16
    maps = FeatureMaps([torch.randn(3, 8, 32, 32), torch.randn(3, 16, 16, 16), torch.randn(3, 32, 8, 8)])
    assert head(torch.randn(3, 5), maps).shape == (3, 6, 16, 16)
    coarse = boxes_head.Head(levels[-1:], hidden_size=5, classes=2, width=12, stride=2)  # no finer map given
    assert not coarse.lateral and coarse(torch.randn(3, 5), FeatureMaps(maps.levels[-1:])).shape == (3, 6, 16, 16)
    encoder = Encoder(lamina.config.INPUT_MODELS["image"](name="i", type="image", size=32, width=8, stem="full",
                                                          augment={"flip": True}), {"mean": [0.0] * 3, "std": [1.0] * 3})
    assert [tuple(level) for level in encoder.backbone.levels] == list(levels)
    encoder.train()
    _, given = encoder.encode_map(torch.rand(6, 3, 32, 32) * 255)
    assert given.mirrored is not None and given.mirrored.shape == (6,) and [m.shape[-1] for m in given.levels] == [32, 16, 8]
    encoder.eval()
    assert encoder.encode_map(torch.rand(6, 3, 32, 32))[1].mirrored is None


def test_focal_loss_is_small_for_the_right_heat_map_and_large_for_a_blank_one():
    boxes = torch.tensor([[[0.2, 0.2, 0.5, 0.6, 0.0]]])
    heat = boxes_head.encode(boxes, 1, (16, 16))["heat"]
    right = torch.where(heat.eq(1), torch.tensor(8.0), torch.tensor(-8.0))
    blank = torch.full_like(heat, boxes_head.HEAT_BIAS, requires_grad=True)
    assert float(boxes_head.focal_loss(right, heat)) < 0.01
    loss = boxes_head.focal_loss(blank, heat)
    assert float(loss.detach()) > 1.0
    loss.backward()
    assert torch.isfinite(blank.grad).all() and blank.grad[heat.eq(1)].item() < 0  # raise the centre's logit


def test_map_is_one_for_perfect_detections_and_lower_for_shifted_ones():
    truth = [np.array([[0.1, 0.1, 0.3, 0.3, 0], [0.5, 0.5, 0.9, 0.8, 1]]), np.array([[0.2, 0.4, 0.6, 0.9, 1]])]
    perfect = [np.concatenate([boxes[:, :4], np.full((len(boxes), 1), 0.9), boxes[:, 4:]], axis=1) for boxes in truth]
    measured = boxes_head.average_precision(truth, perfect, 2)
    assert measured["map"] == pytest.approx(1.0) and measured["map_50"] == pytest.approx(1.0)
    assert measured["ap_0"] == pytest.approx(1.0) and measured["ap_1"] == pytest.approx(1.0)
    shifted = [boxes + np.array([0.03, 0.03, 0.03, 0.03, 0, 0]) for boxes in perfect]
    worse = boxes_head.average_precision(truth, shifted, 2)
    assert worse["map"] < 0.9 and worse["map_50"] == pytest.approx(1.0)  # still found at IoU 0.5
    assert boxes_head.average_precision(truth, [np.zeros((0, 6))] * 2, 2)["map"] == 0.0


# ---- a model trained end to end ----
def test_a_small_model_finds_coloured_squares(trained):
    model, _ = trained
    test = model.metrics_["test"]["boxes"]
    assert test["map_50"] > 0.75, test  # measured 1.0 (mAP@[.5:.95] 0.67) after 8 epochs
    assert {"map", "ap_red", "ap_blue"} <= set(test)
    fresh = squares(30, seed=9)
    predicted = model.predict(fresh)["boxes"]
    hits = total = 0
    for found, truth in zip(predicted, fresh["boxes"]):  # in the images' own 64x64 pixels
        for x0, y0, x1, y1, label in truth:
            total += 1
            hits += any(item["label"] == label and _iou(item["box"], [x0, y0, x1, y1]) > 0.5 for item in found)
    assert hits / total > 0.75, (hits, total)


def _iou(first, second) -> float:
    width = max(0.0, min(first[2], second[2]) - max(first[0], second[0]))
    height = max(0.0, min(first[3], second[3]) - max(first[1], second[1]))
    common = width * height
    area = (first[2] - first[0]) * (first[3] - first[1]) + (second[2] - second[0]) * (second[3] - second[1])
    return common / (area - common)


def test_predictions_survive_save_and_load_and_the_report_draws_them(trained, tmp_path):
    from lamina import report

    model, frame = trained
    model.save(tmp_path / "model")
    again = lamina.load(tmp_path / "model")
    pd.testing.assert_frame_equal(model.predict(frame.head(5)), again.predict(frame.head(5)))
    assert "boxes" in model.evaluation_ and "<img" in report.plots_section(model)
    with pytest.raises(lamina.ConfigError, match="'boxes'"):
        model.explain(frame.head(2))


def test_served_model_answers_boxes_for_an_uploaded_image(trained):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lamina.serving.app import create_app

    model, frame = trained
    buffer = io.BytesIO()
    Image.fromarray(frame["image"][0]).save(buffer, format="PNG")
    with TestClient(create_app(model, "boxes")) as client:
        answer = client.post("/predict", json={"rows": [{"image": base64.b64encode(buffer.getvalue()).decode()}]})
        assert answer.status_code == 200, answer.text
        found = answer.json()["predictions"][0]["boxes"]
        assert found == model.predict(frame.head(1))["boxes"][0]
        assert found and all(set(item) == {"box", "label", "score"} for item in found)
        outputs = client.get("/metadata").json()["outputs"]
        assert outputs[0]["display"] == "boxes" and outputs[0]["image"] == "image"
        assert "drawBoxes" in client.get("/").text
