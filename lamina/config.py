"""The one config schema: inputs, hidden layers, outputs, training, split.

Per-type options live in each data type's file (`features/<type>.py`, class `Options`); this
file joins them with `name` and `type` into one discriminated union, validates early, and turns
pydantic's errors into one line each that names the key and suggests a fix.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from lamina.errors import ConfigError, did_you_mean
from lamina.features import REGISTRY, build, input_types, output_types

STRICT = ConfigDict(extra="forbid")
MAX_NESTING = 100  # configs and learned stats nest a few levels; far below the interpreter's recursion limit
MAX_YAML_VALUES = 1_000_000  # values in a YAML file once aliases are expanded; a config holds hundreds
# a key whose default a readable config leaves out unless it was set (see readable and features/base.py)
WHEN_SET = {"shown_when": "set"}
ROLES = {"inputs": "input", "outputs": "output"}  # the role a feature's `shown_when` conditions may name


def _feature_model(type_name: str, role: str) -> type[BaseModel]:
    """The type's Options with `name` and `type` first (and `weight` for outputs)."""
    options = REGISTRY[type_name].Options
    fields: dict[str, Any] = {
        "name": (str, Field(min_length=1, description="the column in the data")),
        "type": (Literal[type_name], Field(description="the data type")),
    }
    fields.update({key: (field.annotation, field) for key, field in options.model_fields.items()})
    if role == "output":
        fields["weight"] = (float, Field(1.0, gt=0, description="weight of this output's loss in the total",
                                         json_schema_extra=WHEN_SET))

    def check_options(feature: BaseModel) -> BaseModel:  # the Options' own checks across keys
        try:
            options.model_validate({key: value for key, value in dict(feature).items() if key in options.model_fields})
        except ValidationError as error:
            raise ValueError(error.errors()[0]["msg"].removeprefix("Value error, ")) from None
        return feature

    return create_model(f"{type_name.title()}{role.title()}", __config__=STRICT, __doc__=options.__doc__,
                        __validators__={"check_options": model_validator(mode="after")(check_options)}, **fields)


INPUT_MODELS = {name: _feature_model(name, "input") for name in input_types()}
OUTPUT_MODELS = {name: _feature_model(name, "output") for name in output_types()}
InputFeature = Annotated[Union[tuple(INPUT_MODELS.values())], Field(discriminator="type")]
OutputFeature = Annotated[Union[tuple(OUTPUT_MODELS.values())], Field(discriminator="type")]


class Hidden(BaseModel):
    """The hidden layers between the concatenated input encodings and the output heads. A readable config
    shows all of these: together they are the shape of the network."""

    model_config = STRICT
    layers: int = Field(3, ge=0, le=64, description="number of hidden layers")
    size: int = Field(256, ge=1, description="width of each hidden layer")
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    activation: Literal["relu", "gelu", "silu", "tanh", "leaky_relu"] = "relu"
    normalization: Literal["batch", "layer", "none"] = "batch"
    residual: bool = Field(False, description="add each layer's input to its output (skip connections)")


class EarlyStopping(BaseModel):
    model_config = STRICT
    patience: int = Field(5, ge=1, description="epochs without improvement before stopping")
    metric: str = Field("loss", description="'loss' (validation loss) or '<output>.<metric>', e.g. income.roc_auc")


class Training(BaseModel):
    """How the network learns. A readable config shows the defaults that decide what is learned and how
    long (epochs, batch size, learning rate, its schedule, early stopping); the rest (regularisation
    fine print, the seed, where and how batches run, logging) changes little or nothing of the result, so
    it shows only when set."""

    model_config = STRICT
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(256, ge=1)
    learning_rate: float | Literal["auto"] = Field(
        "auto", description="a number, or auto: a learning-rate range test picks it before training")
    schedule: Literal["one_cycle", "cosine", "constant"] = "one_cycle"
    weight_decay: float = Field(0.01, ge=0.0, json_schema_extra=WHEN_SET)
    gradient_clip: float | None = Field(1.0, gt=0.0, description="max gradient norm; null turns clipping off",
                                        json_schema_extra=WHEN_SET)
    early_stopping: EarlyStopping | None = Field(default_factory=EarlyStopping)
    seed: int = Field(42, json_schema_extra=WHEN_SET)
    workers: int = Field(2, ge=0, description="background processes that decode lazily read columns (image files "
                                              "too many to hold in memory) for training batches; 0: decode in "
                                              "the main process", json_schema_extra=WHEN_SET)
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
                        description="where the network trains: auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps; "
                                    "under torchrun each process takes the GPU of its local rank",
                        json_schema_extra=WHEN_SET)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="autocast: bf16 or fp16 (with gradient scaling) halve memory and speed up GPUs; auto: "
                            "bf16 where the GPU supports it, else fp16 on CUDA, fp32 on the CPU",
        json_schema_extra=WHEN_SET)
    compile: bool = Field(False, description="compile the network with torch.compile (slower start, faster steps)",
                          json_schema_extra=WHEN_SET)
    streaming: Literal["auto"] | bool = Field(
        "auto", description="read a Parquet file (or folder of them) batch by batch instead of into memory; auto: "
                            "when the files are larger than 2 GiB", json_schema_extra=WHEN_SET)
    shuffle_buffer: int = Field(100_000, ge=1, description="rows held in memory to shuffle a streamed file's "
                                                            "batches: memory stays bounded by it",
                                json_schema_extra=WHEN_SET)
    log: Literal["none", "tensorboard", "mlflow"] = Field(
        "none", description="also write each epoch's losses, validation metrics, learning rate and time, and the "
                            "final metrics, to TensorBoard or MLflow (pip install 'lamina[tracking]')",
        json_schema_extra=WHEN_SET)
    log_dir: str | None = Field(None, min_length=1, description="for log: tensorboard, the folder of the runs' "
                                                                "event files (default: tensorboard/ in the output "
                                                                "folder, else runs/ in the working directory)")
    tracking_uri: str | None = Field(None, min_length=1, description="for log: mlflow, where runs are stored: a "
                                                                     "tracking server (http://host:5000) or a "
                                                                     "database (sqlite:///path/mlflow.db); default: "
                                                                     "mlflow.db in the output folder, else MLflow's "
                                                                     "own default")
    experiment: str = Field("lamina", min_length=1, json_schema_extra={"shown_when": {"log": ["mlflow"]}},
                            description="the MLflow experiment the run belongs to")
    run_name: str | None = Field(None, min_length=1, description="the run's name in MLflow or its folder in "
                                                                 "log_dir (default: the date and time)")

    @model_validator(mode="after")
    def _check_log(self) -> "Training":
        if self.log_dir is not None and self.log != "tensorboard":
            raise ValueError(f"log_dir applies to log: tensorboard, but log is {self.log}; set log: tensorboard "
                             f"or remove log_dir")
        if self.tracking_uri is not None and self.log != "mlflow":
            raise ValueError(f"tracking_uri applies to log: mlflow, but log is {self.log}; set log: mlflow or "
                             f"remove tracking_uri")
        return self


class Split(BaseModel):
    """How rows are divided into train / validation / test. A readable config shows the method and the
    ratios (which rows a model is tested on); the other keys have no default that applies (null)."""

    model_config = STRICT
    method: Literal["auto", "random", "stratified", "column", "time"] = Field(
        "auto", description="auto: stratified on the first output when it is binary or category, else random; "
                            "time: the latest rows (by `column`, per `group` when given) are validation and test")
    ratios: tuple[float, float, float] = Field((0.8, 0.1, 0.1), description="train, validation, test")
    column: str | None = Field(None, description="for method: column, a column holding train/validation/test; "
                                                 "for method: time, the column of times (numbers or dates)")
    group: str | None = Field(None, description="for method: time, split each group's rows by time (e.g. each "
                                                "user's latest interactions are the test)")
    holdout: int | None = Field(None, ge=1, description="for method: time with group: the last `holdout` rows of "
                                                        "each group are the test and the `holdout` before them "
                                                        "validation (ratios are then ignored)")
    seed: int | None = Field(None, description="defaults to training.seed")

    @model_validator(mode="after")
    def _check(self) -> "Split":
        if abs(sum(self.ratios) - 1.0) > 1e-6 or min(self.ratios) < 0 or self.ratios[0] <= 0:
            raise ValueError(f"split ratios must be >= 0, with train > 0, and sum to 1; got {list(self.ratios)}")
        if self.method == "column" and not self.column:
            raise ValueError("split method 'column' needs 'column: <name of the split column>'")
        if self.method == "time" and not self.column:
            raise ValueError("split method 'time' needs 'column: <name of the time column>'")
        if (self.group or self.holdout) and self.method != "time":
            raise ValueError("split keys 'group' and 'holdout' only apply to method: time")
        if self.holdout and not self.group:
            raise ValueError("split key 'holdout' needs 'group: <column>' (rows held out per group)")
        return self


class Simulation(BaseModel):
    """How `lamina rollout` judges a model as a policy: it acts in a Gymnasium environment for unseen
    episodes, beside the environment's scripted expert, a do-nothing and a random policy on the same seeds
    (lamina/simulation/). Training ignores this section."""

    model_config = STRICT
    environment: str = Field(min_length=1, description="a Gymnasium environment with a scripted expert in lamina: "
                                                        "CartPole-v1 or Reacher-v5")
    episodes: int = Field(20, ge=1, le=10_000, description="episodes each policy runs, one seed each")
    seed: int = Field(1000, ge=0, description="seed of the first episode (the others follow it); keep it away from "
                                              "the seeds the demonstrations were recorded with")
    max_steps: int | None = Field(None, ge=1, description="steps before an episode is cut short (default: the "
                                                          "environment's own time limit)")
    inputs: dict[str, list[int] | str] | None = Field(
        None, description="which observation components feed each input, by input name: a list of positions or "
                          "a slice '0:4' (default: the whole observation to the input named 'observation')")
    action: str | None = Field(None, min_length=1, description="the output that gives the action (default: the "
                                                               "first output)")


class Config(BaseModel):
    """A whole model: inputs -> hidden layers -> outputs, how to train it and how to split the data."""

    model_config = STRICT
    inputs: list[InputFeature] = Field(min_length=1)
    hidden: Hidden = Field(default_factory=Hidden)
    outputs: list[OutputFeature] = Field(min_length=1)
    training: Training = Field(default_factory=Training)
    split: Split = Field(default_factory=Split)
    tune: dict[str, Any] | None = Field(None, description="for lamina tune: dotted config paths and the values to "
                                                          "try (a list, or {low, high, log, step}), and `search:` "
                                                          "options; lamina train ignores it (see lamina/tune.py)")
    simulation: Simulation | None = Field(None, description="for lamina rollout: the environment a policy model acts "
                                                            "in; lamina train ignores it (see lamina/simulation/)")

    @model_validator(mode="after")
    def _unique_names(self) -> "Config":
        seen: dict[str, str] = {}
        for role, features in (("inputs", self.inputs), ("outputs", self.outputs)):
            for position, feature in enumerate(features):
                where = f"{role}[{position}]"
                if feature.name in seen:
                    raise ValueError(f"duplicate feature name '{feature.name}' at {where} (also at "
                                     f"{seen[feature.name]}); each column may appear once")
                seen[feature.name] = where
        return self

    @model_validator(mode="after")
    def _one_sampling(self) -> "Config":
        for position, feature in enumerate(self.inputs):
            if build(feature).resampling():
                raise ValueError(f"inputs[{position}] ('{feature.name}'): sampling resamples rows by an output's "
                                 f"classes; move it to the binary or category output")
        asking = [feature.name for feature in self.outputs if build(feature).resampling()]
        if len(asking) > 1:
            raise ValueError(f"outputs {', '.join(repr(name) for name in asking)} each ask for sampling; the "
                             f"training rows can be resampled for one output only, so keep it on one")
        return self

    @model_validator(mode="after")
    def _nested_inputs(self) -> "Config":
        """Features described inside a feature's options (a ranking's item_inputs) are input features too."""
        for role, features in (("inputs", self.inputs), ("outputs", self.outputs)):
            for position, feature in enumerate(features):
                for key, items in build(feature).nested_inputs().items():
                    for index, item in enumerate(items):
                        _check_nested(item, f"{role}[{position}] ('{feature.name}'): {key}[{index}] "
                                            f"('{item.get('name')}')")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The resolved config: every key with its value, defaults included (what a model was trained with)."""
        # without a tune or simulation section, saved configs (and fingerprints) stay as before they existed
        absent = {key for key, value in (("tune", self.tune), ("simulation", self.simulation)) if value is None}
        return self.model_dump(mode="json", exclude=absent or None)

    def readable(self) -> dict[str, Any]:
        """The config as a person reads it (a saved config.yaml, init-config): the keys that were set, and
        the defaults that matter under them; load_config of it gives this config again (see _readable)."""
        return _readable(self, {})


def _readable(model: BaseModel, context: dict[str, Any]) -> dict[str, Any]:
    """The keys of `model` worth reading, JSON-able: those set (even to their default), those whose value
    is not their default, and the defaults that apply. A default applies unless it is null (nothing
    chosen: lamina decides from the data) or its field's json_schema_extra says `shown_when`: "set"
    (only when set), {key: [values]} (only when each such key of the same model, or of `context`,
    the feature's role, holds one of the values) or a list of such conditions (when any holds).
    Everything left out is at its default, so loading the result gives the same config while the
    defaults stay what they are."""
    dumped = model.model_dump(mode="json")
    values = dict(model)
    shown = {}
    for key, field in type(model).model_fields.items():
        value, default = values[key], field.get_default(call_default_factory=True)
        if key not in model.model_fields_set and value == default and not _applies(field, default, values, context):
            continue
        if isinstance(value, BaseModel):
            shown[key] = _readable(value, {})
        elif isinstance(value, list) and key in ROLES and all(isinstance(item, BaseModel) for item in value):
            shown[key] = [_readable(item, {"role": ROLES[key]}) for item in value]
        else:
            shown[key] = dumped[key]
    return shown


def _applies(field: Any, default: Any, values: dict[str, Any], context: dict[str, Any]) -> bool:
    """Whether a default is worth showing where it is (see _readable)."""
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    rule = extra.get("shown_when")
    if rule == "set" or default is None:
        return False
    known = {**context, **values}
    alternatives = rule if isinstance(rule, list) else [rule or {}]
    return any(all(known.get(key) in allowed for key, allowed in conditions.items()) for conditions in alternatives)


def to_yaml(values: dict[str, Any]) -> str:
    """A config dict as YAML the way people write it: sections in order, each feature on one line."""
    return yaml.safe_dump(values, sort_keys=False, default_flow_style=None, width=110)


def _check_nested(item: dict, where: str) -> None:
    model = INPUT_MODELS[item["type"]]
    try:
        model.model_validate(item)
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            raise ValueError(f"{where}: unknown key '{key}' for a {item['type']} feature"
                             f"{did_you_mean(key, list(model.model_fields))}") from None
        raise ValueError(f"{where}.{key}: {first['msg']}") from None


def load_config(source: Config | dict | str | Path) -> Config:
    """A Config from a Config, a dict, or a YAML file path; raises ConfigError with a precise message."""
    if isinstance(source, Config):
        return source
    origin = ""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' does not exist; pass a YAML file, a dict or a lamina.Config")
        origin = f"{path}: "
        source = read_yaml(path)
    if not isinstance(source, dict):
        got = "nothing (an empty file)" if source is None else type(source).__name__
        raise ConfigError(f"{origin}a config must be a mapping with keys inputs, outputs (and hidden, "
                          f"training, split); got {got}")
    try:
        return Config.model_validate(source)
    except ValidationError as error:
        raise ConfigError(origin + "\n".join(_explain(item, source) for item in _merge_unions(error.errors()))) \
            from None


def read_yaml(path: Path) -> Any:
    """The content of a YAML (or JSON) config file; a ConfigError naming the file when it is not
    UTF-8, not YAML, or nested too deeply for anything to walk safely."""
    try:
        source = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(error, 'problem', error)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file '{path}' is not UTF-8 text; save the YAML file as UTF-8") from None
    except RecursionError:  # the YAML parser recurses once per nesting level
        source, problem = None, f"is nested more than {MAX_NESTING} levels deep"
    else:
        problem = nesting_problem(source, MAX_YAML_VALUES)
    if problem:
        raise ConfigError(f"config file '{path}' {problem}; a lamina config is a few levels of keys and lists: "
                          f"look for an unclosed '[' or '{{' or an alias that refers to itself")
    return source


def nesting_problem(value: Any, values_limit: int | None = None) -> str | None:
    """What makes parsed YAML or JSON unsafe to walk, or None: nesting deeper than MAX_NESTING
    (validation, printing and saving all recurse), or more than `values_limit` values once YAML
    aliases are expanded (a few lines can expand into billions). Iterative, so this check itself
    cannot exhaust the stack; a structure that contains itself counts as too deep."""
    stack, values = [(value, 1)], 0
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_NESTING:
            return f"is nested more than {MAX_NESTING} levels deep"
        children = list(item.values()) if isinstance(item, dict) else item
        values += len(children)
        if values_limit is not None and values > values_limit:
            return f"holds more than {values_limit} values once its YAML aliases are expanded"
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return None


def _walk(model: Any, parts: tuple) -> tuple[tuple, Any]:
    """The longest prefix of `parts` naming fields of nested models (and list positions), and the
    model it ends in (None when it ends in a plain value)."""
    path: tuple = ()
    for part in parts:
        if isinstance(part, int):
            path += (part,)
            continue
        fields = getattr(model, "model_fields", None)
        if not fields or part not in fields:
            break
        path += (part,)
        annotation = fields[part].annotation
        members = (annotation, *getattr(annotation, "__args__", ()))
        model = next((member for member in members
                      if isinstance(member, type) and issubclass(member, BaseModel)), None)
    return path, model


def _root(loc: tuple) -> tuple[tuple, Any, tuple]:
    """Where to start walking: a feature's own model for locations inside inputs/outputs."""
    if loc[:1] in (("inputs",), ("outputs",)) and len(loc) >= 3:
        models = INPUT_MODELS if loc[0] == "inputs" else OUTPUT_MODELS
        return loc[:3], models.get(loc[2]), loc[3:]
    return (), Config, loc


def _key_path(loc: tuple) -> tuple:
    """The part of an error location made of keys and list positions; after it pydantic appends
    the tag of a union member (training.learning_rate.float, ...class_weights.dict[str,float])."""
    prefix, model, rest = _root(loc)
    return prefix + _walk(model, rest)[0]


def _merge_unions(items: list[dict]) -> list[dict]:
    """One error per key: a value that fits no member of a union (a number or 'auto') comes from
    pydantic as one error per member; join them into 'Input should be a valid number or 'auto''."""
    merged: dict[tuple, dict] = {}
    for item in items:
        loc = tuple(item["loc"])
        path = _key_path(loc)
        if path == loc or item["type"] in ("extra_forbidden", "missing"):
            merged[loc] = item
            continue
        wanted = item["msg"].removeprefix("Input should be ").split(",")[0]
        if len(loc) > len(path) + 1:  # an error inside the member (a dict's value): name the member
            wanted = str(loc[len(path)])
        entry = merged.setdefault(path, {**item, "loc": path, "type": "union", "wanted": []})
        entry["wanted"] += [] if wanted in entry["wanted"] else [wanted]
        entry["msg"] = f"Input should be {' or '.join(entry['wanted'])}"
    return list(merged.values())


def _feature_label(raw: dict, loc: tuple) -> str:
    """'inputs[0] (age)' for a location inside a feature list."""
    try:
        name = raw[loc[0]][loc[1]].get("name")
    except (KeyError, IndexError, TypeError, AttributeError):
        name = None
    return f"{loc[0]}[{loc[1]}]" + (f" ('{name}')" if name else "")


def _allowed_keys(loc: tuple) -> list[str]:
    """The keys valid at the parent of `loc` (for did-you-mean on unknown keys)."""
    _, model, rest = _root(loc)
    path, model = _walk(model, rest[:-1])
    return list(model.model_fields) if model is not None and len(path) == len(rest) - 1 else []


def _explain(item: dict, raw: dict) -> str:
    loc, problem, value = tuple(item["loc"]), item["type"], item.get("input")
    in_feature = loc and loc[0] in ("inputs", "outputs") and len(loc) >= 2 and isinstance(loc[1], int)
    where = _feature_label(raw, loc) if in_feature else ".".join(str(part) for part in loc) or "config"
    if problem == "extra_forbidden":
        key = loc[-1]
        allowed = _allowed_keys(loc)
        if in_feature and len(loc) >= 4:
            nested = f" in {'.'.join(str(part) for part in loc[3:-1])}" if len(loc) > 4 else ""
            return (f"unknown key '{key}'{nested} for {loc[2]} feature {where}"
                    f"{did_you_mean(key, [k for k in allowed if k not in ('name', 'type')])}")
        parent = ".".join(str(part) for part in loc[:-1]) or "the config"
        return f"unknown key '{key}' in {parent}{did_you_mean(key, allowed)}"
    if problem in ("union_tag_invalid", "union_tag_not_found"):
        tag = (value or {}).get("type") if isinstance(value, dict) else None
        if tag is None:
            return f"{where}: missing 'type'; set one of: {', '.join(REGISTRY)}"
        if loc[0] == "outputs" and tag in REGISTRY:
            return (f"{where}: type '{tag}' cannot be an output; output types are: "
                    f"{', '.join(output_types())}")
        if loc[0] == "inputs" and tag in REGISTRY:
            return f"{where}: type '{tag}' can only be an output; input types are: {', '.join(input_types())}"
        choices = input_types() if loc[0] == "inputs" else output_types()
        return f"{where}: unknown type '{tag}'{did_you_mean(tag, choices)}"
    if problem == "missing":
        return f"{where}: missing required key" if not in_feature else \
            f"{where}: missing required key '{loc[-1]}'"
    key = f"{where}.{'.'.join(str(part) for part in loc[3:])}" if in_feature and len(loc) >= 4 else where
    message = item["msg"].removeprefix("Value error, ")
    return f"{key}: {message} (got {value!r})" if problem != "value_error" else f"{key}: {message}"
