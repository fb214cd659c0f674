"""The Python client for apps: typed calls for every route, and writers that batch and retry: buffered (every
event), aggregating (one event per key and window) and sampling (one event in k of a sampled meter).

from metering.client import BufferedUsageWriter, MeteringClient

with BufferedUsageWriter(MeteringClient("http://127.0.0.1:7071/api", key)) as usage:
    usage.record("acme", "api.requests", 1, dimensions={"region": "eu"})
"""

from metering.api.contract import (
    Accepted,
    GroupTotal,
    HistoryResponse,
    QuotaDecision,
    UsageAggregate,
    UsageBucket,
    UsageResponse,
)
from metering.client.aggregating import AggregatingUsageWriter, AsyncAggregatingUsageWriter
from metering.client.buffer import Backoff, CloseReport, RejectedEvent, WriterStats
from metering.client.errors import (
    BadRequest,
    ConnectionFailed,
    Forbidden,
    InvalidEvent,
    MeteringError,
    NotFound,
    PayloadTooLarge,
    ProblemError,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from metering.client.exports import ExportReconciliation, ExportRun
from metering.client.http import DEFAULT_URL, AsyncMeteringClient, MeteringClient
from metering.client.invoices import InvoiceForecast, InvoiceLine, InvoicePreview, Statement, TierApplied
from metering.client.manage import (
    ClosedPeriod,
    ClosedPeriods,
    HealthReport,
    MetricLimits,
    PartitionHealth,
    PortalLink,
    TenantSettings,
    WebhookDeliveries,
    WebhookDelivery,
    WebhookRedrive,
)
from metering.client.recording import new_event
from metering.client.sampling import AsyncSamplingUsageWriter, SamplingUsageWriter
from metering.client.writer import AsyncBufferedUsageWriter, BufferedUsageWriter, BufferFull, WriterClosed
from metering.core.events import FieldError, UsageEvent
from metering.core.limits import Decision
from metering.core.periods import Granularity

__all__ = [
    "DEFAULT_URL",
    "Accepted",
    "AggregatingUsageWriter",
    "AsyncAggregatingUsageWriter",
    "AsyncBufferedUsageWriter",
    "AsyncMeteringClient",
    "AsyncSamplingUsageWriter",
    "Backoff",
    "BadRequest",
    "BufferFull",
    "BufferedUsageWriter",
    "CloseReport",
    "ClosedPeriod",
    "ClosedPeriods",
    "ConnectionFailed",
    "Decision",
    "ExportReconciliation",
    "ExportRun",
    "FieldError",
    "Forbidden",
    "Granularity",
    "GroupTotal",
    "HealthReport",
    "HistoryResponse",
    "InvalidEvent",
    "InvoiceForecast",
    "InvoiceLine",
    "InvoicePreview",
    "MeteringClient",
    "MeteringError",
    "MetricLimits",
    "NotFound",
    "PartitionHealth",
    "PayloadTooLarge",
    "PortalLink",
    "ProblemError",
    "QuotaDecision",
    "RateLimited",
    "RejectedEvent",
    "SamplingUsageWriter",
    "ServerError",
    "ServiceUnavailable",
    "Statement",
    "TenantSettings",
    "TierApplied",
    "Unauthorized",
    "UnsupportedMediaType",
    "UsageAggregate",
    "UsageBucket",
    "UsageEvent",
    "UsageResponse",
    "ValidationFailed",
    "WebhookDeliveries",
    "WebhookDelivery",
    "WebhookRedrive",
    "WriterClosed",
    "WriterStats",
    "new_event",
]
