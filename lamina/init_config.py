"""A starting config inferred from a table: every registered type is asked whether it recognises each
column (its `sniff`, on a bounded sample), the most confident one wins, and the target becomes the output."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lamina import features
from lamina.data import SPLIT_NAMES
from lamina.datasets import BOOKKEEPING
from lamina.errors import DataError, did_you_mean
from lamina.features.base import Column, Sniff
from lamina.features.common import describe_cell, missing_mask

SAMPLE_ROWS = 10_000  # rows of a table looked at: the first ones of a file (never the whole of a large one)
CLOSE = 0.15  # a runner-up this near the winner's confidence is named beside it
# A table trains for at least MIN_STEPS optimizer steps (30 epochs of 30 batches), within 30 to MAX_EPOCHS
# epochs: a few hundred rows make a handful of steps an epoch (see training_defaults)
MIN_STEPS = 900
MAX_EPOCHS = 60
TRAINING_SHARE = 0.8  # of a table without a split column: the train share of the default split


@dataclass
class Choice:
    """What init-config decided for one column: its type (None: left out) and why."""
    column: str
    type: str | None
    reason: str
    confidence: float = 0.0
    options: dict = field(default_factory=dict)
    runner_up: tuple[str, Sniff] | None = None  # (type, its answer) when it came within CLOSE

    def line(self) -> str:
        """One line of init-config's account: 'age: number 0.70 (numbers); runner-up category 0.50 (...)'."""
        if self.type is None:
            return f"'{self.column}': left out, {self.reason}"
        text = f"'{self.column}': {self.type} {self.confidence:.2f} ({self.reason})"
        if self.runner_up:
            name, answer = self.runner_up
            text += f"; runner-up {name} {answer.confidence:.2f} ({answer.reason})"
        return text


def sniff_column(column: pd.Series, is_target: bool) -> Choice:
    """Ask every registered type that can take this role (input, or output for the target) about the
    column; the most confident answer wins, the registry's order breaking ties."""
    name = str(column.name)
    present = column[~missing_mask(column)].reset_index(drop=True)
    if present.empty:
        return Choice(name, None, "empty")
    facts = Column(name, present, len(column), is_target)
    if facts.distinct <= 1 and present.map(lambda value: np.ndim(value) == 0).all():
        return Choice(name, None, "constant")
    if facts.grouped_numbers:
        return Choice(name, None, "numbers written with ',' between thousands ('1,250'), which no type reads; "
                                  "save the column as plain numbers (1250)")
    answers = []
    for type_name, module in features.REGISTRY.items():
        if not (module.CAN_BE_OUTPUT if is_target else module.CAN_BE_INPUT):
            continue
        answer = module.Feature.sniff(facts)
        if answer is not None and answer.confidence > 0:
            answers.append((type_name, answer))
    answers.sort(key=lambda pair: -pair[1].confidence)  # stable: ties keep the registry's order
    if not answers:
        scalars = present.map(lambda value: np.ndim(value) == 0).all()
        if scalars and facts.distinct == len(present) and len(present) > 20:
            return Choice(name, None, "a different value in every row (an id?)")
        return Choice(name, None, f"no type recognised it (e.g. {describe_cell(present.iloc[0])[:60]}); declare it "
                                  f"in the config yourself")
    (best, answer), rest = answers[0], answers[1:]
    close = rest[0] if rest and answer.confidence - rest[0][1].confidence <= CLOSE + 1e-9 else None
    return Choice(name, best, answer.reason, answer.confidence, dict(answer.options), close)


def infer_config(frame: pd.DataFrame, targets: list[str]) -> tuple[dict, list[str]]:
    """A config dict and one line per column saying the type chosen and why (see Choice.line), from at
    most the first SAMPLE_ROWS rows of the frame."""
    columns = [str(column) for column in frame.columns]
    for target in targets:
        if target not in frame.columns:
            raise DataError(f"target column '{target}' is not in the data{did_you_mean(target, columns)}")
    sample = frame.head(SAMPLE_ROWS)
    inputs, outputs, notes = [], [], []
    split = split_column(sample, targets)
    bookkeeping = frame.attrs.get(BOOKKEEPING, {})  # a named data set's columns that no model is given
    for column in sample.columns:
        is_target = column in targets
        if column == split:
            notes.append(f"'{column}': the split (every row train, validation or test)")
            continue
        if column in bookkeeping and not is_target:
            notes.append(f"'{column}': left out: bookkeeping column of the data set ({bookkeeping[column]})")
            continue
        choice = sniff_column(sample[column].rename(str(column)), is_target)
        notes.append(choice.line())
        if choice.type is None:
            if is_target:
                raise DataError(f"target column '{column}' cannot be learned: it is {choice.reason}")
            continue
        (outputs if is_target else inputs).append({"name": str(column), "type": choice.type, **choice.options})
    if not inputs:
        raise DataError("no usable input columns were found beside the target")
    hidden, training, note = suggested_settings(inputs, len(frame))
    notes += [note] if note else []
    config = {"inputs": inputs, "hidden": {"layers": 3, "size": 256, "dropout": 0.1, **hidden}, "outputs": outputs,
              "training": training_defaults(training_rows(frame, split), training)}
    if split is not None:
        config["split"] = {"method": "column", "column": split}
    return config, notes


def suggested_settings(inputs: list[dict], rows: int) -> tuple[dict, dict, str]:
    """What each input's type `suggests` for a table of `rows` rows: more of its options (added to its
    entry in place; the sniffed ones win), and the hidden and training keys of the first input that
    suggests any (an image's CNN and epochs), with a line saying which input set them ("" for none)."""
    hidden, training, note = {}, {}, ""
    for entry in inputs:
        options = {key: value for key, value in entry.items() if key not in ("name", "type")}
        suggestion = features.REGISTRY[entry["type"]].Feature.suggests(options, rows)
        for key, value in suggestion.get("options", {}).items():
            entry.setdefault(key, value)
        if not note and (suggestion.get("hidden") or suggestion.get("training")):
            hidden, training = dict(suggestion.get("hidden", {})), dict(suggestion.get("training", {}))
            settings = ", ".join(f"{key} {value}" for key, value in {**hidden, **training}.items())
            note = f"hidden layers and training as the {entry['type']} input '{entry['name']}' suggests ({settings})"
    return hidden, training, note


def training_rows(frame: pd.DataFrame, split: str | None) -> int:
    """The rows of the frame that training reads: those its split column marks train, else the default
    split's TRAINING_SHARE."""
    if split is None:
        return max(1, round(len(frame) * TRAINING_SHARE))
    return int(frame[split].astype(str).str.strip().str.lower().map(SPLIT_NAMES).eq("train").sum())


def training_defaults(rows: int, suggested: dict | None = None) -> dict:
    """The training init-config writes for `rows` training rows: batches of batch_size(rows), as many
    epochs (30 to MAX_EPOCHS) as make MIN_STEPS optimizer steps, and early stopping that waits the whole
    run (patience = epochs), keeping the epoch of least validation loss. Under the one-cycle schedule
    that epoch comes as the rate anneals, after a stretch of high rates in which the validation loss
    rises, which a patience of 5 took for the end: japanese_vowels (243 training rows) stopped at epoch
    15 of 30; run to the end of 60 epochs its least validation loss came at epochs 46 to 58 for seeds
    0-4. reacher_demonstrations stopped at epoch 21 of 30 (test RMSE 0.039; run to the end 0.034), and
    adult's 10,000-row sample kept the same epoch either way (docs/benchmarks.md, section 20). A type's
    suggested training (an image's epochs and batches, which fit its files) replaces batches and
    epochs, and keeps the default patience."""
    if suggested:
        return {"epochs": 30, "batch_size": batch_size(rows), "learning_rate": "auto", **suggested}
    batch = batch_size(rows)
    epochs = min(MAX_EPOCHS, max(30, math.ceil(MIN_STEPS / math.ceil(max(rows, 1) / batch))))
    return {"epochs": epochs, "batch_size": batch, "learning_rate": "auto", "early_stopping": {"patience": epochs}}


def batch_size(rows: int) -> int:
    """256, or for a small set the largest power of two up to `rows` (training rows) / 16, at least 16:
    a few hundred rows in batches of 256 make one step per epoch, too few to train (japanese_vowels, 243
    training rows: test accuracy 0.851 to 0.981 over seeds 0-2 in batches of 256, 0.978 to 0.987 in
    batches of 32; docs/benchmarks.md, section 20)."""
    return int(min(256, max(16, 2 ** int(np.log2(max(rows, 1) / 16)))))


def split_column(frame: pd.DataFrame, targets: list[str]) -> str | None:
    """A column named 'split' whose every cell names a part (train, validation, test, as `split: {method:
    column}` reads them) is the data's own split, not an input; None when there is none."""
    if "split" not in frame.columns or "split" in targets:
        return None
    names = frame["split"].astype(str).str.strip().str.lower()
    return "split" if names.isin(list(SPLIT_NAMES)).all() and names.map(SPLIT_NAMES).eq("train").any() else None
