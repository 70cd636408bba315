"""fedge's shared core: tasks, the tensor codec, configuration and the command line."""

__version__ = "0.1.0"
