"""lamina: declarative deep learning. Describe inputs, hidden layers and outputs; lamina trains,
evaluates, explains, saves and serves the network."""
__version__ = "0.1.0"

from lamina import datasets  # noqa: E402
from lamina.api import Model, load  # noqa: E402
from lamina.config import Config, load_config  # noqa: E402
from lamina.errors import ArtifactError, ConfigError, DataError  # noqa: E402

__all__ = ["Model", "load", "datasets", "Config", "load_config", "ConfigError", "DataError", "ArtifactError", "__version__"]
