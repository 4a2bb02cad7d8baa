"""Workspaces and their members."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from marshmallow import Schema, fields, pre_dump, validate

from billing.models import BILLING_MODES, ROLES

if TYPE_CHECKING:
    from billing.workspaces.service import ShownWorkspace
from schemas.common import Permanent, StrictString, Text, Timestamp


class WorkspaceSchema(Schema):
    """Dumps a workspace with its pooled_seat_limit (billing.workspaces.service.ShownWorkspace)."""

    id = fields.String(metadata={"example": "ws_a1b2c3d4e5f6g7h8"})
    name = fields.String()
    description = fields.String(allow_none=True)
    billing_mode = fields.String(validate=validate.OneOf(BILLING_MODES))
    pooled_seat_limit = fields.Integer(
        allow_none=True,
        metadata={
            "description": "In `pooled` mode, the pool's `users` capacity (the sum of `users` over the workspace's "
            "subscriptions that provide capacity); null in the other modes.",
            "example": 50,
        },
    )
    archived = fields.Boolean()
    created_at = Timestamp()
    updated_at = Timestamp()
    archived_at = Timestamp(allow_none=True)

    @pre_dump
    def _with_seat_limit(self, shown: ShownWorkspace, **_: Any) -> dict[str, Any]:
        workspace, seat_limit = shown.workspace, shown.pooled_seat_limit
        return {
            "id": workspace.id,
            "name": workspace.name,
            "description": workspace.description,
            "billing_mode": workspace.billing_mode,
            "pooled_seat_limit": seat_limit,
            "archived": workspace.archived,
            "created_at": workspace.created_at,
            "updated_at": workspace.updated_at,
            "archived_at": workspace.archived_at,
        }


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
