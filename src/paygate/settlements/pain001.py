"""ISO 20022 `pain.001.001.03` (customer credit transfer initiation): the payout file of one
settlement, the platform's account the debtor, the merchant's the creditor.

Built with the standard library's ElementTree in the schema's element order; the tests validate
every file against the published XSD. SEPA service level and `SLEV` charges apply to euro
transfers only.
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from paygate.merchants.profile import BankAccount
from paygate.settlements.models import major_units

NAMESPACE = "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"


@dataclass(frozen=True, slots=True)
class Transfer:
    reference: str  # the settlement id: message, payment and end-to-end id (≤ 35 characters)
    amount: int  # minor units
    currency: str
    execution_date: dt.date
    remittance: str
    created: dt.datetime


def _text(value: str, limit: int) -> str:
    """Free text within the schema's Max…Text length, without the control characters XML 1.0
    cannot carry."""
    clean = "".join(c if c >= " " or c in "\t\n\r" else " " for c in value)
    return clean[:limit]


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrib)
    if text is not None:
        element.text = text
    return element


def _party(parent: ET.Element, tag: str, name: str) -> None:
    _sub(_sub(parent, tag), "Nm", _text(name, 140))


def _account(parent: ET.Element, tag: str, iban: str) -> None:
    _sub(_sub(_sub(parent, tag), "Id"), "IBAN", iban)


def _agent(parent: ET.Element, tag: str, bic: str | None) -> None:
    institution = _sub(_sub(parent, tag), "FinInstnId")
    if bic:
        _sub(institution, "BIC", bic)
    else:
        # The schema's way of saying the agent is not known: the bank derives it from the IBAN.
        _sub(_sub(institution, "Othr"), "Id", "NOTPROVIDED")


def build(transfer: Transfer, debtor: BankAccount, creditor: BankAccount) -> bytes:
    """The XML document, UTF-8 with its declaration."""
    amount = major_units(transfer.amount, transfer.currency)
    sepa = transfer.currency == "eur"
    ref = _text(transfer.reference, 35)
    # The schema's namespace as the default one: every element below inherits it.
    doc = ET.Element("Document", {"xmlns": NAMESPACE})
    root = _sub(doc, "CstmrCdtTrfInitn")

    header = _sub(root, "GrpHdr")
    _sub(header, "MsgId", ref)
    _sub(header, "CreDtTm", transfer.created.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    _sub(header, "NbOfTxs", "1")
    _sub(header, "CtrlSum", amount)
    _party(header, "InitgPty", debtor.account_holder)

    info = _sub(root, "PmtInf")
    _sub(info, "PmtInfId", ref)
    _sub(info, "PmtMtd", "TRF")
    _sub(info, "NbOfTxs", "1")
    _sub(info, "CtrlSum", amount)
    if sepa:
        _sub(_sub(_sub(info, "PmtTpInf"), "SvcLvl"), "Cd", "SEPA")
    _sub(info, "ReqdExctnDt", transfer.execution_date.isoformat())
    _party(info, "Dbtr", debtor.account_holder)
    _account(info, "DbtrAcct", debtor.iban)
    _agent(info, "DbtrAgt", debtor.bic)
    if sepa:
        _sub(info, "ChrgBr", "SLEV")

    tx = _sub(info, "CdtTrfTxInf")
    _sub(_sub(tx, "PmtId"), "EndToEndId", ref)
    _sub(_sub(tx, "Amt"), "InstdAmt", amount, Ccy=transfer.currency.upper())
    if creditor.bic:
        _agent(tx, "CdtrAgt", creditor.bic)
    _party(tx, "Cdtr", creditor.account_holder)
    _account(tx, "CdtrAcct", creditor.iban)
    _sub(_sub(tx, "RmtInf"), "Ustrd", _text(transfer.remittance, 140))

    body: bytes = ET.tostring(doc, encoding="utf-8", xml_declaration=True)
    return body
