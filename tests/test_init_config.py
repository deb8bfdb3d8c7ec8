"""Type inference for `lamina init-config`."""
import numpy as np
import pandas as pd
import pytest

import lamina
from lamina.init_config import infer_config


def test_infers_each_type_and_skips_ids_and_constants():
    rows = 40
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "id": [f"user{i}" for i in range(rows)],
        "constant": ["same"] * rows,
        "age": rng.integers(18, 90, rows),
        "income": rng.lognormal(10, 2, rows),
        "colour": rng.choice(["red", "green", "blue"], rows),
        "member": rng.choice(["yes", "no"], rows),
        "genres": rng.choice(["drama|comedy", "action", "comedy|horror"], rows),
        "photo": [f"images/{i}.png" for i in range(rows)],
        "pixels": [np.zeros((4, 4), dtype=np.uint8)] * rows,
        "rating": rng.integers(1, 6, rows),
        "review": [" ".join(rng.choice(["soft", "fits", "nice", "too", "small", "love", "it"], 6)) + f" {i}"
                   for i in range(rows)],
    })
    config, notes = infer_config(frame, ["rating"])
    types = {feature["name"]: feature["type"] for feature in config["inputs"]}
    assert types == {"age": "number", "income": "number", "colour": "category", "member": "binary",
                     "genres": "set", "photo": "image", "pixels": "image", "review": "text"}
    assert {"name": "income", "type": "number", "normalize": "log"} in config["inputs"]
    assert config["outputs"] == [{"name": "rating", "type": "category"}]
    assert any("'id'" in note for note in notes) and any("'constant'" in note for note in notes)
    lamina.load_config(config)


def test_unknown_or_unlearnable_target():
    frame = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "x", "x"]})
    with pytest.raises(lamina.DataError, match="did you mean 'a'"):
        infer_config(frame, ["aa"])
    with pytest.raises(lamina.DataError, match="target column 'b' cannot be learned: it is constant"):
        infer_config(frame, ["b"])


def test_nested_option_errors_name_the_nested_key():
    config = {"inputs": [{"name": "photo", "type": "image", "augment": {"rotaton": 5}}],
              "outputs": [{"name": "y", "type": "binary"}]}
    with pytest.raises(lamina.ConfigError, match=r"unknown key 'rotaton' in augment for image feature "
                                                 r"inputs\[0\] \('photo'\); did you mean 'rotation'\?"):
        lamina.load_config(config)
    config["inputs"][0]["augment"] = {"rotation": 400}
    with pytest.raises(lamina.ConfigError, match=r"inputs\[0\] \('photo'\)\.augment\.rotation: .*180"):
        lamina.load_config(config)
