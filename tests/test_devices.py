"""Devices and precision. Without a GPU here, the device code is checked on PyTorch's "meta" device,
where any tensor left on the CPU inside a forward pass or a loss is an error, as it would be on a GPU;
bf16 runs through CPU autocast. The tests marked `gpu` run where CUDA is present and skip elsewhere."""
import numpy as np
import pandas as pd
import pytest
import torch

import lamina
from lamina import devices, features, train
from lamina.data import tensors
from lamina.errors import ConfigError
from lamina.features.columns import LazyColumn
from conformance_types import table

META = torch.device("meta")
gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def small_frame(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows), "c": rng.choice(list("pqr"), rows)})
    frame["y"] = np.where(frame["a"] - frame["b"] + (frame["c"] == "p") > 0, "yes", "no")
    return frame


def config(**training) -> dict:
    return {"inputs": [{"name": "a", "type": "number"}, {"name": "b", "type": "number"},
                       {"name": "c", "type": "category"}],
            "outputs": [{"name": "y", "type": "binary"}], "hidden": {"layers": 1, "size": 16},
            "training": {"epochs": 3, "batch_size": 64, "learning_rate": 0.01, **training}}


ROLES = [(name, "input") for name in features.input_types()] + [(name, "output") for name in features.output_types()]


@pytest.mark.parametrize("type_name, role", ROLES)
def test_a_training_step_keeps_every_tensor_on_the_networks_device(type_name, role):
    frame, settings = table(type_name, role)
    settings["training"]["epochs"] = 1
    model = lamina.Model(settings).fit(frame, quiet=True)
    rows = frame[frame["column"].notna()].head(16) if role == "output" else frame.head(16)
    batch = tensors(rows, model.inputs_, model.outputs_)
    batch["inputs"] = {name: value[:] if isinstance(value, LazyColumn) else value
                       for name, value in batch["inputs"].items()}
    network = model.network_.to(META).train()
    try:
        loss = train.batch_loss(network, devices.move(batch, META), model.outputs_)
        loss.backward()
    except RuntimeError as error:
        if "meta tensors" in str(error) and "device" not in str(error):  # shapes that depend on the values
            pytest.skip(f"{type_name} ({role}) reads tensor values, which the meta device does not have")
        raise
    assert loss.device == META


@pytest.mark.parametrize("type_name", ["binary", "category", "set"])
def test_class_weighted_losses_follow_the_outputs_device(type_name):
    frame, settings = table(type_name, "output")
    settings["outputs"][0]["class_weights"] = "balanced"
    settings["training"]["epochs"] = 1
    model = lamina.Model(settings).fit(frame, quiet=True)
    feature = model.outputs_[0]
    target = feature.target(frame["column"].dropna()).to(META)
    output = torch.zeros(target.shape if target.ndim > 1 or type_name == "binary" else
                         (len(target), len(feature.stats["labels"])), device=META)
    assert feature.loss(output, target).device == META


def test_bf16_on_the_cpu_trains_and_predicts_through_autocast():
    seen = []
    model = lamina.Model(config(precision="bf16"))
    original = train.batch_loss

    def spy(network, batch, outputs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(network, batch, outputs)

    train.batch_loss = spy
    try:
        model.fit(small_frame(), quiet=True)
    finally:
        train.batch_loss = original
    assert seen and all(seen)
    hook_seen = []
    model.network_.trunk.register_forward_hook(lambda *_: hook_seen.append(torch.is_autocast_enabled("cpu")))
    predicted = model.predict(small_frame(50, seed=1))
    assert hook_seen and all(hook_seen)
    assert np.isfinite(predicted["y_probability"]).all()
    assert model.metrics_["test"]["y"]["roc_auc"] > 0.9  # bf16 on this easy task: about 0.99 in fp32


def test_precision_and_device_choices_are_checked():
    assert devices.choose_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert devices.choose_device("auto").type in ("cpu", "mps")
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            devices.choose_device("cuda:0")
        assert devices.precision_dtype("auto", torch.device("cpu")) is None
    with pytest.raises(ConfigError, match="fp16 needs a GPU"):
        devices.precision_dtype("fp16", torch.device("cpu"))
    with pytest.raises(lamina.ConfigError, match="training.device"):
        lamina.Model(config(device="gpu"))


def test_prediction_follows_the_networks_device():
    model = lamina.Model(config()).fit(small_frame(), quiet=True)
    assert devices.engine_of(model.network_).device == torch.device("cpu")
    assert devices.engine_of(model.network_.to(META)).device == META


@gpu
def test_a_model_trained_on_a_gpu_predicts_the_same_after_loading_on_the_cpu(tmp_path):
    model = lamina.Model(config(device="cuda", precision="fp32")).fit(small_frame(), output_dir=tmp_path, quiet=True)
    assert next(model.network_.parameters()).is_cuda
    on_gpu = model.predict(small_frame(50, seed=1))
    loaded = lamina.load(tmp_path)
    assert not next(loaded.network_.parameters()).is_cuda
    np.testing.assert_allclose(loaded.predict(small_frame(50, seed=1))["y_probability"], on_gpu["y_probability"],
                               atol=1e-4)
    loaded.explain(small_frame(3, seed=2))


@gpu
@pytest.mark.parametrize("precision", ["auto", "fp16", "bf16"])
def test_mixed_precision_on_a_gpu_learns(precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    model = lamina.Model(config(device="cuda", precision=precision)).fit(small_frame(), quiet=True)
    assert model.metrics_["test"]["y"]["roc_auc"] > 0.9


def test_compile_trains_through_torch_compile():
    pytest.importorskip("torch._inductor")
    compiled = lamina.Model(config(compile=True)).fit(small_frame(), quiet=True)
    plain = lamina.Model(config()).fit(small_frame(), quiet=True)
    # the compiled graph computes the same network (kernels may round differently)
    assert compiled.metrics_["test"]["y"]["roc_auc"] == pytest.approx(plain.metrics_["test"]["y"]["roc_auc"], abs=0.02)
    assert compiled.metrics_["test"]["y"]["roc_auc"] > 0.9
