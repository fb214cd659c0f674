"""The command line's tasks against the service, one module per area; `metering/cli.py` assembles them."""
