"""Workspaces and their members."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from billing.models import BILLING_MODES, ROLES
from schemas.common import Permanent, StrictString, Text, Timestamp


class WorkspaceSchema(Schema):
    id = fields.String(metadata={"example": "ws_a1b2c3d4e5f6g7h8"})
    name = fields.String()
    description = fields.String(allow_none=True)
    billing_mode = fields.String(validate=validate.OneOf(BILLING_MODES))
    archived = fields.Boolean()
    created_at = Timestamp()
    updated_at = Timestamp()
    archived_at = Timestamp(allow_none=True)


class WorkspaceCreateSchema(Schema):
    name = StrictString(required=True, validate=validate.Length(max=50))
    description = Text(allow_none=True, validate=validate.Length(max=200))
    billing_mode = fields.String(required=True, validate=validate.OneOf(BILLING_MODES))


class WorkspaceUpdateSchema(Schema):
    name = StrictString(validate=validate.Length(max=50))
    description = Text(allow_none=True, validate=validate.Length(max=200))
    billing_mode = Permanent("billing_mode is permanent and cannot be changed.")


class WorkspaceListSchema(Schema):
    data = fields.List(fields.Nested(WorkspaceSchema))
    has_more = fields.Boolean()


class MemberSchema(Schema):
    user_id = fields.String()
    workspace_id = fields.String()
    role = fields.String(validate=validate.OneOf(ROLES))
    created_at = Timestamp()
    updated_at = Timestamp()


class MemberCreateSchema(Schema):
    user_id = StrictString(required=True, validate=validate.Length(max=255))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class MemberUpdateSchema(Schema):
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class MemberListSchema(Schema):
    data = fields.List(fields.Nested(MemberSchema))
    has_more = fields.Boolean()
