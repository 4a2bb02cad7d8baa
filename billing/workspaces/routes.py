"""HTTP routes for workspaces and members."""

from __future__ import annotations

from typing import Any

from flask import g
from flask.views import MethodView

from billing.access import workspace_access
from billing.blueprints import authenticated_blueprint
from billing.openapi import route_facts
from billing.state import current
from billing.workspaces import service
from schemas.workspaces import (
    MemberCreateSchema,
    MemberListSchema,
    MemberSchema,
    MemberUpdateSchema,
    WorkspaceCreateSchema,
    WorkspaceListSchema,
    WorkspaceSchema,
    WorkspaceUpdateSchema,
)

blp = authenticated_blueprint(
    "workspaces", __name__, url_prefix="/workspaces", description="Workspaces and their members."
)


@blp.route("")
class Workspaces(MethodView):
    @route_facts("listWorkspaces", role=None)
    @blp.response(200, WorkspaceListSchema)
    def get(self) -> dict[str, Any]:
        """List the caller's workspaces"""
        return {"data": service.list_workspaces(current(), g.user_id), "has_more": False}

    @route_facts("createWorkspace", role=None)
    @blp.arguments(WorkspaceCreateSchema)
    @blp.response(201, WorkspaceSchema)
    def post(self, data: dict[str, Any]) -> Any:
        """Create a workspace (the caller becomes its owner)"""
        return service.create_workspace(current(), g.user_id, data)


@blp.route("/<workspaceId>")
class WorkspaceById(MethodView):
    @route_facts("retrieveWorkspace", role="viewer")
    @blp.response(200, WorkspaceSchema)
    def get(self, workspaceId: str) -> Any:
        """Retrieve a workspace"""
        return service.retrieve_workspace(current(), workspace_access(workspaceId))

    @route_facts("updateWorkspace", role="admin")
    @blp.arguments(WorkspaceUpdateSchema)
    @blp.response(200, WorkspaceSchema)
    def patch(self, data: dict[str, Any], workspaceId: str) -> Any:
        """Update a workspace's name or description"""
        return service.update_workspace(current(), workspace_access(workspaceId), data)

    @route_facts("archiveWorkspace", role="owner")
    @blp.response(204)
    def delete(self, workspaceId: str) -> None:
        """Archive a workspace"""
        service.archive_workspace(current(), workspace_access(workspaceId))


@blp.route("/<workspaceId>/members")
class Members(MethodView):
    @route_facts("listMembers", role="viewer")
    @blp.response(200, MemberListSchema)
    def get(self, workspaceId: str) -> dict[str, Any]:
        """List a workspace's members"""
        return {"data": service.list_members(current(), workspace_access(workspaceId)), "has_more": False}

    @route_facts("addMember", role="admin", forbidden="FORBIDDEN_MEMBERS")
    @blp.arguments(MemberCreateSchema)
    @blp.response(201, MemberSchema)
    def post(self, data: dict[str, Any], workspaceId: str) -> Any:
        """Add a member"""
        return service.add_member(current(), workspace_access(workspaceId), data)


@blp.route("/<workspaceId>/members/<memberId>")
class MemberById(MethodView):
    @route_facts("updateMember", role="admin", forbidden="FORBIDDEN_MEMBERS")
    @blp.arguments(MemberUpdateSchema)
    @blp.response(200, MemberSchema)
    def patch(self, data: dict[str, Any], workspaceId: str, memberId: str) -> Any:
        """Change a member's role"""
        return service.change_member_role(current(), workspace_access(workspaceId), memberId, data["role"])

    @route_facts("removeMember", role="admin", forbidden="FORBIDDEN_MEMBERS")
    @blp.response(204)
    def delete(self, workspaceId: str, memberId: str) -> None:
        """Remove a member (anyone may remove themself)"""
        service.remove_member(current(), workspace_access(workspaceId), memberId)
