"""sizewise: is a bigger model better for my sentence-pair task, at my budget?"""

from sizewise.errors import ConfigError, DataError, SizewiseError

__version__ = "0.1.0"

__all__ = ["ConfigError", "DataError", "SizewiseError", "__version__"]
