"""qhybrid: hybrid classical/quantum portfolio optimization with a trusted zone."""

__version__ = "0.1.0"
