"""The rules everything else builds on, with no I/O: exact decimals, the clock, the usage event and its one
validation path, the meter catalog, billing periods, hub positions. Imports nothing of the project."""
