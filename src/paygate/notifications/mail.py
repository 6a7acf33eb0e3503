"""E-mail: messages rendered from Jinja2 templates (plain text and HTML, sent as one
multipart/alternative message) and an SMTP sender (`PAYGATE_SMTP_URL`).

`PAYGATE_SMTP_URL` is `smtp://[user:password@]host[:port][?from=address]`: plain SMTP that
upgrades with STARTTLS when the server offers it, or `smtps://…` for TLS from the first byte.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formataddr, make_msgid
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
import jinja2

SUBJECTS = {
    "payment_receipt": "Your receipt from {merchant}",
    "payment_failed": "Your payment to {merchant} did not go through",
    "refund_receipt": "Your refund from {merchant}",
    "daily_summary": "Your payments on {date}",
}
DEFAULT_FROM = "no-reply@localhost"

# Templates ship inside the package (package data `notifications/templates/*`).
_env = jinja2.Environment(
    loader=jinja2.PackageLoader("paygate.notifications", "templates"),
    autoescape=jinja2.select_autoescape(enabled_extensions=("html",)),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
)


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    text: str
    html: str


def render(kind: str, context: dict[str, Any]) -> Rendered:
    """The subject, text and HTML of a message of `kind` (a template name)."""
    subject = SUBJECTS[kind].format(**context)
    text = _env.get_template(f"{kind}.txt").render(context)
    html = _env.get_template(f"{kind}.html").render(context)
    return Rendered(subject, text, html)


def build(
    *, sender: str, sender_name: str | None, to: str, subject: str, text: str, html: str | None
) -> EmailMessage:
    """A multipart/alternative message: the text part first, the HTML part preferred."""
    message = EmailMessage()
    message["From"] = formataddr((sender_name or "", sender)) if sender_name else sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html")
    return message


class EmailSender(Protocol):
    sender: str

    async def send(self, message: EmailMessage) -> None: ...


@dataclass
class SmtpSender:
    """Sends over SMTP; one connection per message (volumes are a message per payment)."""

    hostname: str
    port: int
    sender: str = DEFAULT_FROM
    username: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False
    timeout_s: float = 10.0

    @classmethod
    def from_url(cls, url: str) -> SmtpSender:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("PAYGATE_SMTP_URL must be smtp://host[:port] or smtps://host[:port]")
        use_tls = parts.scheme == "smtps"
        sender = parse_qs(parts.query).get("from", [DEFAULT_FROM])[0]
        Address(addr_spec=sender)  # refuses a malformed address at start-up, not at first send
        return cls(
            hostname=parts.hostname,
            port=parts.port or (465 if use_tls else 25),
            sender=sender,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
        )

    async def send(self, message: EmailMessage) -> None:
        await aiosmtplib.send(
            message,
            hostname=self.hostname,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            timeout=self.timeout_s,
        )
