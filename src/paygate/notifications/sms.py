"""SMS senders behind one protocol: by default each message is appended to a file in the data
folder (nothing leaves the machine); `HttpSmsSender` posts a form to a provider's API, the shape
the common SMS APIs take (`To`, `From`, `Body`, HTTP basic auth).

    sender = sms_sender_from_url("https://ACCOUNT:TOKEN@sms.example/v1/messages?from=%2B15550100",
                                 data_dir)
    await sender.send("+15550123", "Acme: payment of 19.99 USD received.")
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlencode, urlsplit, urlunsplit

import httpx

# E.164: a plus, a country code and at most 15 digits in all.
PHONE = re.compile(r"^\+[1-9]\d{6,14}$")
MAX_TEXT = 1600  # ten concatenated SMS segments


class SmsError(Exception):
    """The provider did not accept the message (the text says why, without the message)."""


class SmsSender(Protocol):
    async def send(self, to: str, text: str) -> None: ...


def masked(phone: str) -> str:
    """A phone number for logs: enough to tell messages apart, not enough to call."""
    return phone[:3] + "…" + phone[-2:] if len(phone) > 6 else "…"


class FileSmsSender:
    """Appends `{"to", "text", "created"}` as one JSON line per message."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def send(self, to: str, text: str) -> None:
        line = json.dumps({"to": to, "text": text, "created": int(time.time())})
        await asyncio.to_thread(self._append, line + "\n")

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)


class HttpSmsSender:
    """A form POST of `To`, `From` and `Body` to `url`, with basic auth when credentials are
    given; any 2xx answer is success."""

    def __init__(
        self,
        url: str,
        sender: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url
        self.sender = sender
        self._auth = httpx.BasicAuth(username, password or "") if username else None
        self._client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)

    async def send(self, to: str, text: str) -> None:
        form = {"To": to, "From": self.sender, "Body": text}
        try:
            r = await self._client.post(
                self.url, data=form, auth=self._auth or httpx.USE_CLIENT_DEFAULT
            )
        except httpx.TimeoutException:
            raise SmsError("the SMS provider did not answer in time") from None
        except httpx.HTTPError:
            raise SmsError("could not reach the SMS provider") from None
        if not r.is_success:
            raise SmsError(f"the SMS provider answered HTTP {r.status_code}")

    async def aclose(self) -> None:
        await self._client.aclose()


def sms_sender_from_url(url: str | None, data_dir: Path) -> SmsSender:
    """The file sender when `url` is empty, else the HTTP sender for
    `https://[user:token@]host/path?from=<sender>` (the credentials become basic auth)."""
    if not url:
        return FileSmsSender(data_dir / "sms.log")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("the SMS URL must be an https:// or http:// URL")
    query = parse_qs(parts.query)
    sender = query.pop("from", [""])[0]
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    rest = urlencode(query, doseq=True)
    return HttpSmsSender(
        urlunsplit((parts.scheme, netloc, parts.path, rest, "")),
        sender,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
