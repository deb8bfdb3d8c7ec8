"""The tune section of a config, read for `lamina tune`: dotted paths of the config (checked against
the schema; a feature by its name or position) mapped to a list of choices or a range, and the
search's own options under `search:`. A trial's config is the config with each path set."""
from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lamina import features
from lamina.config import INPUT_MODELS, OUTPUT_MODELS, Config, load_config, read_yaml
from lamina.errors import ConfigError, did_you_mean
from lamina.metrics import direction as metric_direction

SEARCH = "search"  # the tune section's key for the search's own options: no config path starts with it


class Range(BaseModel):
    """A range of numbers to draw from: whole numbers when low and high are, else real numbers."""

    model_config = ConfigDict(extra="forbid")
    low: int | float  # also YAML's 1e-4, which it reads as text
    high: int | float
    log: bool = Field(False, description="draw evenly on a log scale (a learning rate); needs low > 0")
    step: int | float | None = Field(None, gt=0, description="draw only low, low + step, ...")

    @model_validator(mode="after")
    def _check(self) -> "Range":
        if self.low > self.high:
            raise ValueError(f"low must not exceed high; got low {self.low}, high {self.high}")
        if self.log and (self.low <= 0 or self.step is not None):
            raise ValueError(f"log: true needs low > 0 and no step; got low {self.low}, step {self.step}")
        return self


class SearchOptions(BaseModel):
    """The tune section's `search:` key: what the search optimises and how."""

    model_config = ConfigDict(extra="forbid")
    metric: str | None = Field(None, description="'loss' or '<output>.<metric>' on the validation rows; default: "
                                                 "the first output's main metric")
    pruner: Literal["median", "successive_halving", "none"] = "median"
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int | None = Field(None, description="the sampler's seed (worker k of --jobs takes seed + k)")
    startup_trials: int = Field(5, ge=0, description="trials that run to the end before the median pruner prunes")


@dataclass
class Parameter:
    """One dotted path of the config and the values a trial may give it."""

    path: str
    location: tuple  # keys and list positions into the config dict: ('inputs', 2, 'encoding')
    choices: list | None = None
    range: Range | None = None
    encoded: bool = False  # choices that are lists or mappings travel through Optuna as JSON text

    def suggest(self, trial) -> Any:
        if self.range is None:
            return self.decode(trial.suggest_categorical(
                self.path, [json.dumps(choice) for choice in self.choices] if self.encoded else self.choices))
        low, high, log, step = self.range.low, self.range.high, self.range.log, self.range.step
        if isinstance(low, int) and isinstance(high, int):
            return trial.suggest_int(self.path, low, high, step=int(step or 1), log=log)
        return trial.suggest_float(self.path, low, high, step=step, log=log)

    def decode(self, value: Any) -> Any:
        """A value as Optuna stores it, back as the config's value."""
        return json.loads(value) if self.encoded else value

    def extremes(self) -> list:
        """The values checked against the schema before the search starts."""
        return list(self.choices) if self.range is None else [self.range.low, self.range.high]


@dataclass
class Search:
    """What a tune section asks for: the metric, its direction, the options and the paths to vary."""

    metric: str
    direction: str  # Optuna's: minimize or maximize
    options: SearchOptions
    space: dict[str, Parameter]


def read_search(source: Config | dict | str | Path) -> tuple[dict, Search]:
    """The config dict without its tune section (validated) and the search it describes; a
    ConfigError naming the key for anything wrong in the section."""
    raw = raw_config(source)
    section = raw.pop("tune", None)
    base = load_config(raw)
    if not isinstance(section, dict) or not section:
        raise ConfigError("the config has no tune section; add one mapping config paths to the values to try, e.g. "
                          "tune: {hidden.size: [64, 128, 256], training.learning_rate: {low: 1.0e-4, high: "
                          "1.0e-2, log: true}}")
    options = _validated(SearchOptions, section.get(SEARCH) or {}, f"tune.{SEARCH}")
    metric = _metric(options.metric, base)
    search = Search(metric, "minimize" if metric_direction(metric) == "min" else "maximize", options,
                    {str(path): _parameter(str(path), values, raw) for path, values in section.items()
                     if path != SEARCH})
    if not search.space:
        raise ConfigError("the tune section names no config path to vary; add e.g. hidden.size: [64, 128, 256]")
    for parameter in search.space.values():  # each value alone must give a valid config: found now, not at trial 30
        for value in parameter.extremes():
            try:
                load_config(apply(raw, {parameter.path: value}, search.space))
            except ConfigError as error:
                raise ConfigError(f"tune.{parameter.path}: the value {value!r} makes the config invalid: {error}") \
                    from None
    return raw, search


def _validated(model: type[BaseModel], value: Any, where: str) -> Any:
    """`value` as `model`, or a ConfigError naming the key (did you mean ...?)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(model.model_fields)}; got {value!r}")
    try:
        return model.model_validate(value)
    except ValidationError as error:
        errors = error.errors()
        first = next((item for item in errors if item["type"] == "extra_forbidden"), errors[0])  # a typo first
        key = str(first["loc"][0]) if first["loc"] else ""  # after it pydantic names the union member tried
        if first["type"] == "extra_forbidden":
            raise ConfigError(f"unknown key '{key}' in {where}{did_you_mean(key, list(model.model_fields))}") \
                from None
        if first["type"] == "missing":
            raise ConfigError(f"{where}: missing key '{key}'") from None
        message = "expected a number" if first["type"].startswith(("int_", "float_")) else \
            first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{where}{'.' + key if key else ''}: {message}" +
                          (f" (got {first.get('input')!r})" if key else "")) from None


def raw_config(source: Config | dict | str | Path) -> dict:
    if isinstance(source, Config):
        return source.model_dump(mode="json")
    if isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise ConfigError(f"config file '{source}' does not exist; pass a YAML file, a dict or a lamina.Config")
        source = read_yaml(Path(source))
    if not isinstance(source, dict):
        raise ConfigError(f"a config must be a mapping with keys inputs, outputs and tune; got {type(source).__name__}")
    return copy.deepcopy(source)


def _metric(metric: str | None, base: Config) -> str:
    """'loss' or '<output>.<metric>'; by default the first output's main metric."""
    if metric is None:
        first = base.outputs[0]
        return f"{first.name}.{features.build(first).main_metric()[0]}"
    output, _, name = metric.rpartition(".")  # output names may themselves hold dots
    names = [feature.name for feature in base.outputs]
    if metric != "loss" and (output not in names or not name):
        raise ConfigError(f"tune.{SEARCH}.metric: '{metric}' is not 'loss' or '<output>.<metric>' of an output "
                          f"({', '.join(names)}){did_you_mean(output, names) if output else ''}")
    return metric


def _parameter(path: str, values: Any, raw: dict) -> Parameter:
    parameter = Parameter(path, _location(path, raw))
    if isinstance(values, list):
        if not values:
            raise ConfigError(f"tune.{path}: the list of choices is empty; give at least one value")
        parameter.choices, parameter.encoded = values, any(isinstance(value, (list, dict)) for value in values)
    elif isinstance(values, dict):
        parameter.range = _validated(Range, values, f"tune.{path}")
    else:
        raise ConfigError(f"tune.{path}: expected a list of choices ([64, 128]) or a range ({{low: 1, high: 4}}); "
                          f"got {values!r}")
    return parameter


def _location(path: str, raw: dict) -> tuple:
    """Where a dotted path points in the config dict, checked against the schema: the segment after
    inputs/outputs is a feature's name (or its position); a ConfigError names what is unknown."""
    parts = path.split(".")
    sections = [name for name in Config.model_fields if name != "tune"]
    if parts[0] == "split":
        raise ConfigError(f"tune.{path}: the split cannot vary during a search (every trial is scored on the same "
                          f"validation rows); set it outside the tune section")
    if parts[0] not in sections:
        raise ConfigError(f"tune.{path}: unknown config section '{parts[0]}'{did_you_mean(parts[0], sections)}")
    model: Any = Config
    location: tuple = ()
    rest = parts
    if parts[0] in ("inputs", "outputs"):
        role = parts[0][:-1]
        entries = [entry for entry in raw.get(parts[0]) or [] if isinstance(entry, dict)]
        names = [str(entry.get("name")) for entry in entries]
        if len(parts) < 3:
            raise ConfigError(f"tune.{path}: name a feature and one of its options, e.g. "
                              f"'{parts[0]}.{names[0] if names else 'NAME'}.OPTION'")
        if parts[1] in names:
            position = names.index(parts[1])
        elif parts[1].isdigit() and int(parts[1]) < len(entries):
            position = int(parts[1])
        else:
            raise ConfigError(f"tune.{path}: no {role} feature named '{parts[1]}'{did_you_mean(parts[1], names)}")
        if parts[2] == "name":
            raise ConfigError(f"tune.{path}: a feature's name is its column and cannot vary; vary its options")
        model = (INPUT_MODELS if role == "input" else OUTPUT_MODELS)[entries[position]["type"]]
        location, rest = (parts[0], position), parts[2:]
    offset = len(parts) - len(rest)
    for index, key in enumerate(rest):
        where = ".".join(parts[:offset + index]) or "the config"
        fields = model.model_fields if model is not None else {}
        known = [name for name in fields if name not in ("name", "tune")]
        if not fields:
            raise ConfigError(f"tune.{path}: '{where}' holds a value, not keys")
        if key not in fields:
            raise ConfigError(f"tune.{path}: unknown key '{key}' in {where}{did_you_mean(key, known)}")
        location += (key,)
        annotation = fields[key].annotation
        members = (annotation, *getattr(annotation, "__args__", ()))  # a section that may be null: X | None
        model = next((member for member in members if isinstance(member, type) and issubclass(member, BaseModel)),
                     None)
    return location


def apply(raw: dict, values: dict[str, Any], space: dict[str, Parameter]) -> dict:
    """A copy of the config dict (tune section left out) with each path set to its value."""
    config = {key: copy.deepcopy(value) for key, value in raw.items() if key != "tune"}
    for path, value in values.items():
        location, target = space[path].location, config
        for key in location[:-1]:
            if isinstance(key, str) and not isinstance(target.get(key), (dict, list)):
                target[key] = {}  # a section left to its defaults (or null) gets the one key set
            target = target[key]
        target[location[-1]] = value
    return config
