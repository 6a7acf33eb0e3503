"""Request and response shapes of `/v1/fraud/rules` and `/v1/fraud/lists`."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, Field, StrictBool, StrictInt, StrictStr

from paygate.api.schemas import ListOut, Strict

Action = Literal["allow", "block", "review"]
Kind = Literal["card_fingerprint", "email", "ip_address", "card_bin"]
Expression = Annotated[StrictStr, Field(min_length=1, max_length=2000)]
Description = Annotated[StrictStr, Field(max_length=500)]
ListName = Annotated[StrictStr, Field(pattern=r"^[a-z][a-z0-9_]{0,59}$")]

EXPRESSION_EXAMPLE = "amount > 100000 and card_country != ip_country"


class RuleCreate(Strict):
    action: Action = Field(examples=["block"])
    expression: Expression = Field(examples=[EXPRESSION_EXAMPLE])
    description: Description | None = None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "action": "block",
                    "expression": EXPRESSION_EXAMPLE,
                    "description": "Big foreign cards",
                }
            ]
        }
    }


class RuleUpdate(Strict):
    """Any of the fields; each change makes a new version of the rule."""

    action: Action | None = None
    expression: Expression | None = None
    description: Description | None = None
    enabled: StrictBool | None = None

    model_config = {"json_schema_extra": {"examples": [{"enabled": False}]}}


class DryRunIn(Strict):
    action: Action = Field(examples=["block"])
    expression: Expression = Field(examples=[EXPRESSION_EXAMPLE])
    days: Annotated[StrictInt, Field(ge=1, le=90)] = Field(30, examples=[30])

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"action": "review", "expression": "total_payments_per_card_hourly > 5", "days": 30}
            ]
        }
    }


class ListCreate(Strict):
    name: ListName = Field(examples=["blocked_emails"])
    kind: Kind = Field(examples=["email"])
    description: Description | None = None

    model_config = {
        "json_schema_extra": {"examples": [{"name": "blocked_emails", "kind": "email"}]}
    }


class ItemCreate(Strict):
    # Checked by attributes.normalize_item, whose refusal of card numbers says what to send.
    _card_fields: ClassVar[frozenset[str]] = frozenset({"value"})

    value: Annotated[StrictStr, Field(min_length=1, max_length=320)] = Field(
        examples=["fraudster@example.com"]
    )

    model_config = {"json_schema_extra": {"examples": [{"value": "fraudster@example.com"}]}}


class RuleOut(BaseModel):
    id: str = Field(examples=["frr_01JD4Q6Z8V3N2M5K7H9G1F0E2D"])
    object: Literal["fraud_rule"] = "fraud_rule"
    livemode: bool
    action: Action
    expression: str = Field(description="The expression as parsed, in canonical form.")
    description: str | None
    enabled: bool
    deleted: bool
    version: int
    created: int
    updated: int


class RuleVersionOut(BaseModel):
    id: str
    object: Literal["fraud_rule_version"] = "fraud_rule_version"
    rule: str
    version: int
    action: Action
    expression: str
    description: str | None
    enabled: bool
    deleted: bool
    actor: str
    created: int


class RuleDeleted(BaseModel):
    id: str
    object: Literal["fraud_rule"] = "fraud_rule"
    deleted: Literal[True] = True


class ListObjOut(BaseModel):
    id: str = Field(examples=["frl_01JD4Q6Z8V3N2M5K7H9G1F0E2D"])
    object: Literal["fraud_list"] = "fraud_list"
    livemode: bool
    name: str
    kind: Kind
    description: str | None
    item_count: int
    created: int


class ItemOut(BaseModel):
    id: str
    object: Literal["fraud_list_item"] = "fraud_list_item"
    list: str
    value: str
    created: int


class ItemDeleted(BaseModel):
    id: str
    object: Literal["fraud_list_item"] = "fraud_list_item"
    deleted: Literal[True] = True


class AmountOut(BaseModel):
    amount: int
    currency: str


class DryRunMatchOut(BaseModel):
    id: str
    amount: int
    currency: str
    status: str
    failure_code: str | None
    created: int


class DryRunOut(BaseModel):
    object: Literal["fraud_rule_dry_run"] = "fraud_rule_dry_run"
    action: Action
    expression: str
    days: int
    evaluated: int = Field(description="Payments of the period the rule was evaluated on.")
    matched: int
    matched_amount: list[AmountOut] = Field(
        description="The matched payments' total, per currency."
    )
    matched_fraud: int = Field(description="Matched payments known as fraud.")
    fraud: int = Field(description="Payments of the period known as fraud, matched or not.")
    sample: list[DryRunMatchOut] = Field(description="The newest matched payments, at most 100.")
    has_more: bool


class RuleList(ListOut):
    data: list[RuleOut]


class RuleVersionList(ListOut):
    data: list[RuleVersionOut]


class ListList(ListOut):
    data: list[ListObjOut]


class ItemList(ListOut):
    data: list[ItemOut]
