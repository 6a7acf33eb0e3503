"""Sending queued e-mail and SMS: claim due messages under a lease, send one, record the outcome
with the same retry schedule as webhooks."""

from __future__ import annotations

import time

import aiosmtplib
import sqlalchemy as sa

from paygate.ids import now_s
from paygate.notifications import mail
from paygate.notifications import messages as store
from paygate.notifications.models import next_try
from paygate.notifications.sms import SmsError, SmsSender
from paygate.platform.db import Database


class MessageSender:
    def __init__(
        self, db: Database, email: mail.EmailSender | None, sms: SmsSender, scale: float
    ) -> None:
        self.db = db
        self.email = email
        self.sms = sms
        self.scale = scale

    async def claim(
        self, now: float, limit: int, lease_s: float
    ) -> tuple[list[sa.RowMapping], float | None]:
        """Due messages, now leased to this process, and when the next one falls due."""
        if self.db.is_sqlite:
            # One process: look without the write lock, take it only when something is due.
            async with self.db.read() as conn:
                rows = await store.due_messages(conn, now, limit)
            due, next_at = _split(rows, now)
            if due:
                async with self.db.transaction() as conn:
                    await store.lease_messages(conn, [r["id"] for r in due], now + lease_s)
            return due, next_at
        async with self.db.transaction() as conn:
            rows = await store.due_messages(conn, now, limit)
            due, next_at = _split(rows, now)
            await store.lease_messages(conn, [r["id"] for r in due], now + lease_s)
        return due, next_at

    async def send(self, message: sa.RowMapping) -> tuple[bool, str | None]:
        """Send one message and record the outcome; returns (sent, error)."""
        error = await self._send(message)
        number = message["attempts"] + 1
        if error is None:
            values = {"status": "sent", "attempts": number, "last_error": None, "sent_at": now_s()}
        else:
            retry_at = next_try(time.time(), number, message["give_up_at"], self.scale)
            values = {
                "status": "pending" if retry_at is not None else "dead",
                "attempts": number,
                "last_error": error,
                "next_attempt_at": retry_at if retry_at is not None else time.time(),
            }
        async with self.db.transaction() as conn:
            await store.record_message(conn, message["id"], values)
        return error is None, error

    async def _send(self, message: sa.RowMapping) -> str | None:
        try:
            if message["channel"] == "sms":
                await self.sms.send(message["recipient"], message["body_text"])
                return None
            if self.email is None:
                return "no SMTP server is configured"
            await self.email.send(
                mail.build(
                    sender=self.email.sender,
                    sender_name=message["sender_name"],
                    to=message["recipient"],
                    subject=message["subject"] or "",
                    text=message["body_text"],
                    html=message["body_html"],
                )
            )
            return None
        except SmsError as exc:
            return str(exc)
        except aiosmtplib.SMTPResponseException as exc:
            return f"the SMTP server answered {exc.code}"
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return f"could not send: {type(exc).__name__}"


def _split(rows: list[sa.RowMapping], now: float) -> tuple[list[sa.RowMapping], float | None]:
    due = [r for r in rows if r["next_attempt_at"] <= now]
    later = [r["next_attempt_at"] for r in rows if r["next_attempt_at"] > now]
    return due, (min(later) if later else None)
