"""meterwerk: the command line and the wiring of the packages into one server."""

__version__ = "0.1.0"
