"""Running the pipeline on one machine: Azurite, and (with the function app) a local Functions host."""
