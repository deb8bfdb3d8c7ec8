"""The model card every saved model folder holds (model_card.md): listed in the manifest and checked
like the other files, naming the data, columns, splits and metrics, warning about what the data
shows (rare classes, a small test set, a simulated data set, a classic model as good), rewritten
when a comparison is added, and absent from older folders without harm."""
from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

import lamina
from lamina import ArtifactError, datasets, features, model_card
from lamina.artifact import COMPARISON, MANIFEST, add_file
from lamina.model_card import MODEL_CARD

from conformance_types import columns, make, sample
from helpers_data import config, people

CLASSIC_AHEAD = {
    "output": "segment", "type": "category", "metric": "accuracy", "direction": "max", "skipped": None,
    "rows": {"train": 160, "validation": 20, "test": 20},
    "deep": {"model": "lamina", "test": {"accuracy": 0.55, "f1_macro": 0.5}},
    "classic": {"model": "gradient_boosting", "test": {"accuracy": 0.8, "f1_macro": 0.75}},
    "difference": {"metric": "accuracy", "value": -0.25, "low": -0.4, "high": -0.1, "resamples": 100, "seed": 0},
    "verdict": "the classic model is better by 0.25 accuracy (95% CI 0.1..0.4)",
}


def rows() -> pd.DataFrame:
    frame = people(200)
    frame.loc[frame.index[:10], "segment"] = "vip"  # a class with a handful of rows
    return frame


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[lamina.Model, Path]:
    folder = tmp_path_factory.mktemp("card") / "model"
    outputs = [{"name": "segment", "type": "category"}, {"name": "spend", "type": "number"}]
    model = lamina.Model(config(outputs=outputs)).fit(rows(), output_dir=folder, quiet=True)
    return model, folder


@pytest.fixture
def folder(trained, tmp_path) -> Path:
    """A fresh copy of the saved model folder, free to change."""
    return Path(shutil.copytree(trained[1], tmp_path / "model"))


def manifest_of(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def card_of(folder: Path) -> str:
    return (folder / MODEL_CARD).read_text("utf-8")


def test_card_is_written_and_listed(trained):
    model, folder = trained
    assert MODEL_CARD in manifest_of(folder)["files"]
    card = card_of(folder)
    for name, kind, role in [("age", "number", "input"), ("city", "category", "input"), ("tags", "set", "input"),
                             ("segment", "category", "output"), ("spend", "number", "output")]:
        assert f"| {name} | {kind} | {role} |" in card
    counts = model.training_["rows"]
    assert f"Rows: train {counts['train']}, validation {counts['validation']}, test {counts['test']}." in card
    assert "| output | metric | train | validation | test |" in card
    assert "classifies 'segment' into 4 classes:" in card and "predicts the number 'spend'" in card


def test_metrics_are_the_models_with_the_main_metric_first(trained):
    model, folder = trained
    section = card_of(folder).split("## Metrics")[1].split("##")[0].splitlines()
    lines = [line for line in section if line.startswith("| segment |")]
    assert lines[0].startswith("| segment | accuracy (main) |")
    cells = [float(cell) for cell in lines[0].strip("|").split("|")[2:]]
    expected = [model.metrics_[split]["segment"]["accuracy"] for split in ("train", "validation", "test")]
    assert cells == pytest.approx(expected, abs=5e-5)  # printed with 4 decimals
    spend = [line for line in section if line.startswith("| spend |")]
    assert spend[0].startswith("| spend | rmse (main) |")


def test_card_warns_about_a_rare_class_and_a_small_test_set(trained):
    card = card_of(trained[1])
    limits = card.split("## Known limits")[1].split("##")[0]
    assert re.search(r"Rare classes of 'segment' .*'vip' \(\d\)", limits)
    assert f"Small test set ({trained[0].training_['rows']['test']} rows)" in limits


def test_card_shows_how_to_call_the_model_with_a_real_request(trained):
    model, folder = trained
    card = card_of(folder)
    assert f"lamina predict --model {folder} --data" in card and f"lamina serve {folder}" in card
    assert f"lamina.Model.load({str(folder)!r})" in card
    body = json.loads(re.search(r"-d '(.+)'", card)[1])
    (row,) = body["rows"]
    assert list(row) == ["age", "city", "member", "tags"]
    predicted = model.predict(pd.DataFrame([row]))  # the example is a row the model takes
    assert predicted["segment"].iloc[0] in {"young", "middle", "senior", "vip"}


def test_tampered_card_is_refused_like_any_model_file(folder):
    (folder / MODEL_CARD).write_text(card_of(folder).replace("Known limits", "No limits"), "utf-8")
    with pytest.raises(ArtifactError, match="model_card.md' does not match its checksum"):
        lamina.load(folder)


def test_missing_card_that_is_listed_is_refused(folder):
    (folder / MODEL_CARD).unlink()
    with pytest.raises(ArtifactError, match="model_card.md' is missing from the model folder"):
        lamina.load(folder)


def test_folder_saved_before_cards_loads_and_gets_one_with_a_comparison(folder, trained):
    manifest = manifest_of(folder)
    del manifest["files"][MODEL_CARD]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    (folder / MODEL_CARD).unlink()
    data = people(10, seed=4)
    pd.testing.assert_frame_equal(lamina.load(folder).predict(data), trained[0].predict(data))
    add_file(folder, COMPARISON, json.dumps(CLASSIC_AHEAD))
    assert MODEL_CARD in manifest_of(folder)["files"]
    lamina.load(folder)  # the new card is listed with its checksum


def test_comparison_rewrites_the_card(folder):
    assert "Not compared yet" in card_of(folder)
    add_file(folder, COMPARISON, json.dumps(CLASSIC_AHEAD))
    card = card_of(folder)
    assert "Not compared yet" not in card
    assert "| accuracy (main) | 0.5500 | 0.8000 |" in card and f"Verdict: {CLASSIC_AHEAD['verdict']}." in card
    limits = card.split("## Known limits")[1]
    assert "The deep model is not better than the classic baseline (gradient_boosting)" in limits
    assert lamina.load(folder).comparison_ == CLASSIC_AHEAD
    add_file(folder, COMPARISON, json.dumps({"verdict": "a comparison written by hand"}))  # partial: still a card
    assert "Verdict: a comparison written by hand." in card_of(folder)


def test_card_names_a_simulated_data_set_and_its_licence(trained):
    model = copy.copy(trained[0])
    model.training_ = {**model.training_, "source": "data set 'card_transactions'"}
    card = model_card.render(model, "runs/fraud")
    entry = datasets.info("card_transactions")
    assert entry.description in card and f"Licence: {entry.licence}" in card
    assert "The data set `card_transactions` is simulated or synthetic" in card.split("## Known limits")[1]
    model.training_["source"] = "data set 'adult'"
    assert "simulated" not in model_card.render(model, "runs/adult")


def test_generated_data_sets_are_marked_simulated():
    for entry in datasets.REGISTRY.values():
        generated = re.search(r"synthe|simulat|generated", f"{entry.description} {entry.source}", re.IGNORECASE)
        assert entry.simulated == bool(generated), entry.name


@pytest.mark.parametrize("type_name", features.output_types())
def test_every_output_type_says_what_it_predicts(type_name):
    feature = make(type_name, "output")
    feature.fit(columns(feature, sample(type_name)))
    summary = feature.prediction_summary()
    assert isinstance(summary["predicts"], str) and "\n" not in summary["predicts"]
    assert "'column'" in summary["predicts"]
    for label, count in summary.get("classes", {}).items():
        assert isinstance(label, str) and isinstance(count, int) and count > 0
