"""Organizations, their limits and usage, and the workspace's capacity."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_dump, validate

from billing.catalog import PRODUCTS
from billing.models import Organization
from schemas.common import NonEmptySchema, StrictString, Text, Timestamp

MAX_LIMIT = 1_000_000_000
MAX_DELTA = 1_000_000


def _products_schema(name: str, field: Any) -> type[Schema]:
    """A map with exactly the catalog's products as keys."""
    return Schema.from_dict({product: field() for product in PRODUCTS}, name=name)


LimitsMapSchema = _products_schema("LimitsMap", lambda: fields.Integer(
    strict=True, allow_none=True, validate=validate.Range(min=0, max=MAX_LIMIT),
    metadata={"description": "At most this much in the subtree; 0 disables the product, null: no limit.",
              "example": 10}))
QuantitiesMapSchema = _products_schema("ProductCounts", lambda: fields.Integer(metadata={"example": 3}))


class UsageSchema(Schema):
    usage = fields.Nested(QuantitiesMapSchema, metadata={"description": "This organization's own usage."})
    subtree_usage = fields.Nested(QuantitiesMapSchema,
                                  metadata={"description": "Its usage and that of every organization below it."})


class OrganizationSchema(Schema):
    id = fields.String(metadata={"example": "org_a1b2c3d4e5f6g7h8"})
    workspace_id = fields.String(metadata={"example": "ws_a1b2c3d4e5f6g7h8"})
    name = fields.String()
    external_id = fields.UUID()
    parent_org_id = fields.String(allow_none=True)
    path = fields.String(metadata={"description": '"#"-joined ancestor ids, root first; "" for a root.'})
    depth = fields.Integer()
    billing_account_id = fields.String(allow_none=True, metadata={"description": "The root's billing account."})
    limits = fields.Nested(LimitsMapSchema)
    usage = fields.Nested(UsageSchema)
    created_at = Timestamp()
    updated_at = Timestamp()

    @pre_dump
    def _from_model(self, org: Organization, **_: Any) -> dict[str, Any]:
        return {
            "id": org.id, "workspace_id": org.workspace_id, "name": org.name, "external_id": org.external_id,
            "parent_org_id": org.parent_id, "path": org.path, "depth": org.depth,
            "billing_account_id": org.billing_account_id,
            "limits": {p: org.limit(p) for p in PRODUCTS},
            "usage": {"usage": {p: org.usage(p) for p in PRODUCTS},
                      "subtree_usage": {p: org.subtree_usage(p) for p in PRODUCTS}},
            "created_at": org.created_at, "updated_at": org.updated_at,
        }


class OrganizationListSchema(Schema):
    data = fields.List(fields.Nested(OrganizationSchema))
    has_more = fields.Boolean()


class DescendantsSchema(Schema):
    data = fields.List(fields.Nested(OrganizationSchema))


def _name() -> StrictString:
    return StrictString(required=True, validate=validate.Length(max=50))


class OrganizationCreateSchema(Schema):
    name = _name()
    billing_account_id = Text(
        allow_none=True, validate=validate.Length(min=1, max=64),
        metadata={"description": "Required in single and assigned mode (an account of this workspace); "
                                 "absent or null in pooled mode."})
    limits = fields.Nested(LimitsMapSchema)


class ChildCreateSchema(Schema):
    name = _name()
    limits = fields.Nested(LimitsMapSchema)


class OrganizationUpdateSchema(NonEmptySchema):
    name = StrictString(validate=validate.Length(max=50))
    billing_account_id = Text(
        allow_none=True, validate=validate.Length(min=1, max=64),
        metadata={"description": "Roots only, single and assigned mode: reassigns the subtree."})
    limits = fields.Nested(LimitsMapSchema, metadata={"description": "Merged: a key set to null removes that limit."})


def _non_zero(value: int) -> None:
    if value == 0:
        raise ValidationError("Must not be 0.")


class UsageReportSchema(Schema):
    product = fields.String(required=True, validate=validate.OneOf(PRODUCTS))
    delta = fields.Integer(strict=True, required=True,
                           validate=[validate.Range(min=-MAX_DELTA, max=MAX_DELTA), _non_zero],
                           metadata={"description": "Positive takes capacity, negative releases it.", "example": 1,
                                     "not": {"enum": [0]}})


class LimitEntrySchema(Schema):
    type = fields.String(validate=validate.OneOf(PRODUCTS))
    used = fields.Integer(metadata={"description": "The subtree's usage."})
    direct = fields.Integer(metadata={"description": "This organization's own usage."})
    free = fields.Integer(metadata={"description": "The largest increase accepted here now."})
    org_limit = fields.Integer(allow_none=True, metadata={"description": "The tightest limit on it or an ancestor."})
    total = fields.Integer(metadata={"description": "used + free"})


class LimitContextSchema(Schema):
    type = fields.String(validate=validate.OneOf(("organization", "parent", "billing_account", "workspace")))
    name = fields.String()


class OrganizationLimitsSchema(Schema):
    organization_id = fields.String()
    organization_name = fields.String()
    limits = fields.List(fields.Nested(LimitEntrySchema))
    context = fields.Nested(LimitContextSchema, allow_none=True,
                            metadata={"description": "What binds the product with the least free."})


class PoolProductSchema(Schema):
    capacity = fields.Integer()
    used = fields.Integer()
    free = fields.Integer()


PoolProductsSchema = _products_schema("PoolProducts", lambda: fields.Nested(PoolProductSchema))


class PoolSchema(Schema):
    billing_account_id = fields.String(allow_none=True,
                                       metadata={"description": "null: the workspace's one pool (single, pooled)."})
    products = fields.Nested(PoolProductsSchema)


class CapacitySchema(Schema):
    pools = fields.List(fields.Nested(PoolSchema))
