"""lt: the Leaky Tokens command line."""

__version__ = "0.1.0"
