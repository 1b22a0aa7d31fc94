"""The installed version of synth, named in every export and card (a module of its own: the lowest layer needs it)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("synth")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+local"
