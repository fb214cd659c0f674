"""Exactly-once usage metering on Azure Functions."""
