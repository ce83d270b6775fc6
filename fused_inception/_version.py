"""The package version, in a module of its own: modules inside the package (the kernel launcher
keys its tuning cache on it) read it without importing the package's ``__init__``, which imports them."""

__version__ = "0.1.0"
