"""Counting exactly once: every key (keys.py) and row shape (rows.py) of a usage partition, pre-aggregating a batch
(batch.py, cells.py), planning its commits (commit.py, pure), applying them through the store port (ledger.py),
reading usage back (reader.py), a cancel's arithmetic (cancel.py, pure), and the control rows closing and the
aggregator share (control.py: the open-period index, how far periods are closed, hub progress)."""
