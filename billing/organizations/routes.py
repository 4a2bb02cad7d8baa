"""HTTP routes for organizations, usage reports, limits and capacity."""

from __future__ import annotations

from typing import Any

from flask import Response
from flask.views import MethodView

from billing.access import organization_access, usage_access, workspace_access
from billing.blueprints import authenticated_blueprint
from billing.organizations import capacity, service
from schemas.organizations import (
    CapacitySchema,
    ChildCreateSchema,
    DescendantsSchema,
    LimitEntrySchema,
    OrganizationCreateSchema,
    OrganizationLimitsSchema,
    OrganizationListSchema,
    OrganizationSchema,
    OrganizationUpdateSchema,
    UsageReportSchema,
)

blp = authenticated_blueprint(
    "organizations", __name__, url_prefix="/workspaces/<workspaceId>",
    description="Hierarchical organizations: they consume the capacity subscriptions provide.",
)


@blp.route("/organizations")
class Organizations(MethodView):
    @blp.response(200, OrganizationListSchema)
    def get(self, workspaceId: str) -> dict[str, Any]:
        """List the workspace's organizations"""
        return {"data": service.list_organizations(workspace_access(workspaceId)), "has_more": False}

    @blp.arguments(OrganizationCreateSchema)
    @blp.response(201, OrganizationSchema)
    def post(self, data: dict[str, Any], workspaceId: str) -> Any:
        """Create a root organization"""
        return service.create_organization(workspace_access(workspaceId), data)


@blp.route("/organizations/<organizationId>")
class OrganizationById(MethodView):
    @blp.response(200, OrganizationSchema)
    def get(self, workspaceId: str, organizationId: str) -> Any:
        """Retrieve an organization"""
        return service.get_organization(workspace_access(workspaceId), organizationId)

    @blp.arguments(OrganizationUpdateSchema)
    @blp.response(200, OrganizationSchema)
    def patch(self, data: dict[str, Any], workspaceId: str, organizationId: str) -> Any:
        """Update an organization's name, limits or (a root's) billing account"""
        return service.update_organization(workspace_access(workspaceId), organizationId, data)

    @blp.response(204)
    def delete(self, workspaceId: str, organizationId: str) -> None:
        """Delete an organization and its descendants"""
        service.delete_organization(workspace_access(workspaceId), organizationId)


@blp.route("/organizations/<organizationId>/children")
class Children(MethodView):
    @blp.arguments(ChildCreateSchema)
    @blp.response(201, OrganizationSchema)
    def post(self, data: dict[str, Any], workspaceId: str, organizationId: str) -> Any:
        """Create a child organization"""
        return service.create_organization(workspace_access(workspaceId), data, parent_id=organizationId)


@blp.route("/organizations/<organizationId>/parent")
class Parent(MethodView):
    @blp.response(200, OrganizationSchema)
    @blp.alt_response(204, description="A root has no parent.")
    def get(self, workspaceId: str, organizationId: str) -> Any:
        """Retrieve an organization's parent"""
        parent = service.get_parent(workspace_access(workspaceId), organizationId)
        return Response(status=204) if parent is None else parent


@blp.route("/organizations/<organizationId>/descendants")
class Descendants(MethodView):
    @blp.response(200, DescendantsSchema)
    def get(self, workspaceId: str, organizationId: str) -> dict[str, Any]:
        """List an organization's descendants, depth-first"""
        return {"data": service.descendants(workspace_access(workspaceId), organizationId)}


@blp.route("/organizations/<organizationId>/limits")
class Limits(MethodView):
    @blp.response(200, OrganizationLimitsSchema)
    def get(self, workspaceId: str, organizationId: str) -> Any:
        """Retrieve what an organization may still use, per product"""
        return capacity.limits(*organization_access(workspaceId, organizationId))


@blp.route("/organizations/<organizationId>/usage")
class Usage(MethodView):
    @blp.arguments(UsageReportSchema)
    @blp.response(200, LimitEntrySchema)
    def post(self, data: dict[str, Any], workspaceId: str, organizationId: str) -> Any:
        """Report usage: take (positive delta) or release capacity"""
        access = usage_access(workspaceId, write=True)
        return capacity.report_usage(access.workspace.id, organizationId, data["product"], data["delta"])


@blp.route("/capacity")
class Capacity(MethodView):
    @blp.response(200, CapacitySchema)
    def get(self, workspaceId: str) -> Any:
        """Retrieve the workspace's capacity pools"""
        return capacity.capacity(usage_access(workspaceId, write=False).workspace)
