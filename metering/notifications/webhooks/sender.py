"""One webhook attempt: the notification POSTed as JSON, signed per the Standard Webhooks specification.

Every attempt is signed afresh, with the time it is sent: receivers refuse a timestamp more than a few minutes
old, so a signature stored with the delivery would fail every retry after that. The headers are `webhook-id`
(the notification's id, the same on every attempt: receivers dedupe on it), `webhook-timestamp` (Unix
seconds) and `webhook-signature` (`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`).

A 2xx acknowledges; 410 Gone means the receiver wants no more; anything else is a failed attempt to retry:
another status, a redirect (never followed: a signed notification goes where it was configured to, or
nowhere), a timeout, a refused or broken connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from enum import StrEnum

import httpx
from standardwebhooks import Webhook

from metering.core.clock import Clock, utc_now

USER_AGENT = "metering-webhooks/1"
# Enough of a refusal's body to say why, in a row an operator reads; never the whole of it.
_ERROR_CHARS = 300


class Result(StrEnum):
    DELIVERED = "delivered"
    GONE = "gone"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Attempt:
    result: Result
    status: int | None = None
    error: str | None = None


class WebhookSender:
    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout: float,
        clock: Clock = utc_now,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._signer = Webhook(secret)
        # The clock the signature's timestamp is read from: the receiver compares it with its own.
        self._clock = clock
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            transport=transport,
            headers={"user-agent": USER_AGENT},
        )

    def headers(self, message_id: str, body: str) -> dict[str, str]:
        # The package reads the instant as UTC whatever its zone says: give it UTC.
        sent = self._clock().astimezone(UTC)
        return {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(sent.timestamp())),
            "webhook-signature": self._signer.sign(message_id, sent, body),
        }

    def send(self, message_id: str, body: str) -> Attempt:
        try:
            with self._client.stream(
                "POST", self.url, content=body.encode(), headers=self.headers(message_id, body)
            ) as response:
                status = response.status_code
                if 200 <= status < 300:
                    return Attempt(Result.DELIVERED, status)
                if status == 410:
                    return Attempt(Result.GONE, status, "410 Gone: the receiver wants no more deliveries")
                return Attempt(Result.FAILED, status, _refusal(response))
        except httpx.TimeoutException:
            return Attempt(Result.FAILED, None, f"no answer within {self.timeout:g} s")
        except httpx.ConnectError as error:
            return Attempt(Result.FAILED, None, f"cannot connect: {error}"[:_ERROR_CHARS])
        except (httpx.HTTPError, OSError) as error:
            return Attempt(Result.FAILED, None, f"{type(error).__name__}: {error}"[:_ERROR_CHARS])

    def close(self) -> None:
        self._client.close()


def _refusal(response: httpx.Response) -> str:
    if response.is_redirect:
        where = response.headers.get("location", "")
        return f"{response.status_code} redirect to {where} (redirects are not followed)"[:_ERROR_CHARS]
    text = ""
    for chunk in response.iter_text():
        text += chunk
        if len(text) >= _ERROR_CHARS:
            break
    detail = " ".join(text.split())
    reason = response.reason_phrase or "refused"
    return (f"{response.status_code} {reason}" + (f": {detail}" if detail else ""))[:_ERROR_CHARS]
