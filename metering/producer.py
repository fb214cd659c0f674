"""`from metering.producer import EventHubUsageProducer` keeps working: the producer is metering.ingest.producer."""

from metering.ingest.producer import EventHubUsageProducer, SendFailed

__all__ = ["EventHubUsageProducer", "SendFailed"]
