"""Organizations, their limits and usage, and the workspace's capacity."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_dump, validate

from billing.catalog import PRODUCTS
from billing.models import Organization
from billing.organizations import pictures
from billing.organizations.branding import picture_of, stored_branding
from schemas.common import NonEmptySchema, StrictString, Text, Timestamp

MAX_LIMIT = 1_000_000_000
MAX_DELTA = 1_000_000


def _products_schema(name: str, field: Any) -> type[Schema]:
    """A map with exactly the catalog's products as keys."""
    return Schema.from_dict({product: field() for product in PRODUCTS}, name=name)


LimitsMapSchema = _products_schema(
    "LimitsMap",
    lambda: fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=0, max=MAX_LIMIT),
        metadata={
            "description": "At most this much in the subtree; 0 disables the product, null: no limit.",
            "example": 10,
        },
    ),
)
QuantitiesMapSchema = _products_schema("ProductCounts", lambda: fields.Integer(metadata={"example": 3}))


class UsageSchema(Schema):
    usage = fields.Nested(QuantitiesMapSchema, metadata={"description": "This organization's own usage."})
    subtree_usage = fields.Nested(
        QuantitiesMapSchema, metadata={"description": "Its usage and that of every organization below it."}
    )


class BrandingColorsSchema(Schema):
    primary = fields.String(allow_none=True, metadata={"description": "#RRGGBB", "example": "#FF5733"})
    page_background = fields.String(allow_none=True, metadata={"description": "#RRGGBB", "example": "#FFFFFF"})


class BrandingSchema(Schema):
    display_name = fields.String(allow_none=True, metadata={"example": "ACME Corp"})
    login_hint = fields.String(allow_none=True, metadata={"example": "acme-corp"})
    colors = fields.Nested(BrandingColorsSchema)


_PICTURE_SHOWN = (
    "A URL of the organization's logo: the HTTPS URL it was given, or, for an uploaded image, "
    "the service's own (public, no token; it changes when the picture does). Null: none."
)


class OrganizationSchema(Schema):
    id = fields.String(metadata={"example": "org_a1b2c3d4e5f6g7h8"})
    workspace_id = fields.String(metadata={"example": "ws_a1b2c3d4e5f6g7h8"})
    name = fields.String()
    external_id = fields.UUID()
    parent_org_id = fields.String(allow_none=True)
    path = fields.String(metadata={"description": '"#"-joined ancestor ids, root first; "" for a root.'})
    depth = fields.Integer()
    billing_account_id = fields.String(allow_none=True, metadata={"description": "The root's billing account."})
    picture = fields.String(
        allow_none=True,
        metadata={
            "format": "uri",
            "description": _PICTURE_SHOWN,
            "example": "https://cdn.altostrat.io/logos/engineering.png",
        },
    )
    limits = fields.Nested(LimitsMapSchema)
    usage = fields.Nested(UsageSchema)
    branding = fields.Nested(BrandingSchema, allow_none=True, metadata={"description": "Null: none set."})
    created_at = Timestamp()
    updated_at = Timestamp()

    @pre_dump
    def _from_model(self, org: Organization, **_: Any) -> dict[str, Any]:
        return {
            "id": org.id,
            "workspace_id": org.workspace_id,
            "name": org.name,
            "external_id": org.external_id,
            "parent_org_id": org.parent_id,
            "path": org.path,
            "depth": org.depth,
            "billing_account_id": org.billing_account_id,
            "picture": picture_of(org),
            "limits": {p: org.limit(p) for p in PRODUCTS},
            "usage": {
                "usage": {p: org.usage(p) for p in PRODUCTS},
                "subtree_usage": {p: org.subtree_usage(p) for p in PRODUCTS},
            },
            "branding": stored_branding(org.branding),
            "created_at": org.created_at,
            "updated_at": org.updated_at,
        }


class PublicBrandingSchema(Schema):
    organization_id = fields.String(metadata={"example": "org_a1b2c3d4e5f6g7h8"})
    display_name = fields.String(
        metadata={"description": "The branding's display name, else the organization's name.", "example": "ACME Corp"}
    )
    picture = fields.String(allow_none=True, metadata={"format": "uri", "description": _PICTURE_SHOWN})
    login_hint = fields.String(allow_none=True, metadata={"example": "acme-corp"})
    colors = fields.Nested(BrandingColorsSchema)


class OrganizationListSchema(Schema):
    data = fields.List(fields.Nested(OrganizationSchema))
    has_more = fields.Boolean()


class DescendantsSchema(Schema):
    data = fields.List(fields.Nested(OrganizationSchema))


def _name() -> StrictString:
    return StrictString(required=True, validate=validate.Length(max=50))


class Picture(Text):
    """A picture sent by a client: an https URL (checked, kept as given, never
    fetched) or a data URI of a JPEG, PNG or GIF (size and alphabet checked
    here; the service decodes it). Loads as `str` or `pictures.DataUri`."""

    PATTERN = pictures.PATTERN

    def __init__(self, **kwargs: Any) -> None:
        metadata = {
            "maxLength": pictures.MAX_LENGTH,
            "description": "A public https:// URL of an image (stored as given, never fetched), or a base64 data "
            "URI of a JPEG, PNG or GIF of at most 2 MB (2 MiB), which the service decodes, keeps "
            "and serves from its own URL. Null: no picture.",
            "example": "https://cdn.acme.com/logo.png",
        }
        super().__init__(allow_none=True, metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return pictures.parse(text)
        except pictures.PictureRefused as refused:
            raise ValidationError(str(refused)) from None


def _color() -> fields.String:
    return fields.String(
        allow_none=True,
        validate=validate.Regexp("^#[0-9A-Fa-f]{6}$", error="A colour is #RRGGBB (hexadecimal digits)."),
        metadata={"example": "#007bff"},
    )


class BrandingColorsInputSchema(Schema):
    primary = _color()
    page_background = _color()


class BrandingInputSchema(Schema):
    display_name = StrictString(allow_none=True, validate=validate.Length(max=255), metadata={"example": "ACME Inc."})
    login_hint = StrictString(allow_none=True, validate=validate.Length(max=255), metadata={"example": "acme-inc"})
    colors = fields.Nested(BrandingColorsInputSchema, allow_none=True)


def _branding() -> fields.Nested:
    return fields.Nested(
        BrandingInputSchema,
        allow_none=True,
        metadata={"description": "Replaces the whole branding (a field left out or null is unset); null removes it."},
    )


class OrganizationCreateSchema(Schema):
    name = _name()
    billing_account_id = Text(
        allow_none=True,
        validate=validate.Length(min=1, max=64),
        metadata={
            "description": "Required in single and assigned mode (an account of this workspace); "
            "absent or null in pooled mode."
        },
    )
    limits = fields.Nested(LimitsMapSchema)
    picture = Picture()
    branding = _branding()


class ChildCreateSchema(Schema):
    name = _name()
    limits = fields.Nested(LimitsMapSchema)
    picture = Picture()
    branding = _branding()


class OrganizationUpdateSchema(NonEmptySchema):
    name = StrictString(validate=validate.Length(max=50))
    billing_account_id = Text(
        allow_none=True,
        validate=validate.Length(min=1, max=64),
        metadata={"description": "Roots only, single and assigned mode: reassigns the subtree."},
    )
    limits = fields.Nested(LimitsMapSchema, metadata={"description": "Merged: a key set to null removes that limit."})
    picture = Picture()
    branding = _branding()


def _non_zero(value: int) -> None:
    if value == 0:
        raise ValidationError("Must not be 0.")


class UsageReportSchema(Schema):
    product = fields.String(required=True, validate=validate.OneOf(PRODUCTS))
    delta = fields.Integer(
        strict=True,
        required=True,
        validate=[validate.Range(min=-MAX_DELTA, max=MAX_DELTA), _non_zero],
        metadata={"description": "Positive takes capacity, negative releases it.", "example": 1, "not": {"enum": [0]}},
    )


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
    context = fields.Nested(
        LimitContextSchema, allow_none=True, metadata={"description": "What binds the product with the least free."}
    )


class PoolProductSchema(Schema):
    capacity = fields.Integer()
    used = fields.Integer()
    free = fields.Integer()


PoolProductsSchema = _products_schema("PoolProducts", lambda: fields.Nested(PoolProductSchema))


class PoolSchema(Schema):
    billing_account_id = fields.String(
        allow_none=True, metadata={"description": "null: the workspace's one pool (single, pooled)."}
    )
    products = fields.Nested(PoolProductsSchema)


class CapacitySchema(Schema):
    pools = fields.List(fields.Nested(PoolSchema))
