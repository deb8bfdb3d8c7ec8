"""lamina: declarative deep learning. Describe inputs, hidden layers and outputs; lamina trains,
evaluates, explains, saves and serves the network."""
from lamina import datasets
from lamina.api import Model, load
from lamina.config import Config, load_config
from lamina.errors import ArtifactError, ConfigError, DataError
from lamina.version import __version__

__all__ = ["Model", "load", "datasets", "Config", "load_config", "ConfigError", "DataError", "ArtifactError", "__version__"]
