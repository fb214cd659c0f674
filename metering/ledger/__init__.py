"""Counting exactly once: every store key and row shape of a usage partition, pre-aggregating a batch, planning
its commits, applying them through the store port, reading usage back."""
