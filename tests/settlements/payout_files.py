"""Validation of payout files against the published ISO 20022 schema (tests/data)."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import xmlschema

XSD = Path(__file__).parent.parent / "data" / "pain.001.001.03.xsd"
NS = {"p": "urn:iso:std:iso:20022:tech:xsd:pain.001.001.03"}


@lru_cache(maxsize=1)
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD))


def validate(document: bytes) -> dict[str, Any]:
    """Raise unless `document` is a valid pain.001.001.03; returns the fields tests look at."""
    import xml.etree.ElementTree as ET

    schema().validate(document.decode())
    root = ET.fromstring(document)
    tx = root.find(".//p:CdtTrfTxInf", NS)
    assert tx is not None
    amount = tx.find("p:Amt/p:InstdAmt", NS)
    assert amount is not None and amount.text is not None
    return {
        "msg_id": root.findtext(".//p:GrpHdr/p:MsgId", namespaces=NS),
        "ctrl_sum": Decimal(root.findtext(".//p:GrpHdr/p:CtrlSum", namespaces=NS) or "-1"),
        "amount": amount.text,
        "currency": amount.get("Ccy"),
        "debtor_iban": root.findtext(".//p:DbtrAcct/p:Id/p:IBAN", namespaces=NS),
        "creditor_iban": tx.findtext("p:CdtrAcct/p:Id/p:IBAN", namespaces=NS),
        "creditor_name": tx.findtext("p:Cdtr/p:Nm", namespaces=NS),
        "creditor_bic": tx.findtext("p:CdtrAgt/p:FinInstnId/p:BIC", namespaces=NS),
        "service_level": root.findtext(".//p:PmtTpInf/p:SvcLvl/p:Cd", namespaces=NS),
    }
