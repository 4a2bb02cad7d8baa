"""HTTP routes for organizations, usage reports, limits and capacity; and,
without a token, an organization's public branding and its uploaded picture."""

from __future__ import annotations

from typing import Any

from flask import Blueprint as FlaskBlueprint
from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint

from billing.access import organization_access, usage_access, workspace_access
from billing.blueprints import authenticated_blueprint
from billing.openapi import RATE_LIMITED, route_facts
from billing.organizations import branding, capacity, service
from billing.rate_limit import throttle
from billing.state import current
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
    PublicBrandingSchema,
    UsageReportSchema,
)

blp = authenticated_blueprint(
    "organizations",
    __name__,
    url_prefix="/workspaces/<workspaceId>",
    description="Hierarchical organizations: they consume the capacity subscriptions provide.",
)

# A body with an uploaded picture (2 MiB of image is 2.8 MB of base64) may be
# this large on the routes that take one; every other route keeps the app's 1 MiB
# (billing/body_limits.py applies it).
PICTURE_BODY_BYTES = 4 * 1024 * 1024
LARGER_BODIES = {
    ("organizations.Organizations", "POST"): PICTURE_BODY_BYTES,
    ("organizations.OrganizationById", "PATCH"): PICTURE_BODY_BYTES,
    ("organizations.Children", "POST"): PICTURE_BODY_BYTES,
}


@blp.route("/organizations")
class Organizations(MethodView):
    @route_facts("listOrganizations", role="viewer")
    @blp.response(200, OrganizationListSchema)
    def get(self, workspaceId: str) -> dict[str, Any]:
        """List the workspace's organizations"""
        return {"data": service.list_organizations(current(), workspace_access(workspaceId)), "has_more": False}

    @route_facts("createOrganization", role="admin")
    @blp.arguments(OrganizationCreateSchema)
    @blp.response(201, OrganizationSchema)
    def post(self, data: dict[str, Any], workspaceId: str) -> Any:
        """Create a root organization"""
        return service.create_organization(current(), workspace_access(workspaceId), data)


@blp.route("/organizations/<organizationId>")
class OrganizationById(MethodView):
    @route_facts("retrieveOrganization", role="viewer")
    @blp.response(200, OrganizationSchema)
    def get(self, workspaceId: str, organizationId: str) -> Any:
        """Retrieve an organization"""
        return service.get_organization(current(), workspace_access(workspaceId), organizationId)

    @route_facts("updateOrganization", role="admin")
    @blp.arguments(OrganizationUpdateSchema)
    @blp.response(200, OrganizationSchema)
    def patch(self, data: dict[str, Any], workspaceId: str, organizationId: str) -> Any:
        """Update an organization's name, limits or (a root's) billing account"""
        return service.update_organization(current(), workspace_access(workspaceId), organizationId, data)

    @route_facts("deleteOrganization", role="admin")
    @blp.response(204)
    def delete(self, workspaceId: str, organizationId: str) -> None:
        """Delete an organization and its descendants"""
        service.delete_organization(current(), workspace_access(workspaceId), organizationId)


@blp.route("/organizations/<organizationId>/children")
class Children(MethodView):
    @route_facts("createChildOrganization", role="admin")
    @blp.arguments(ChildCreateSchema)
    @blp.response(201, OrganizationSchema)
    def post(self, data: dict[str, Any], workspaceId: str, organizationId: str) -> Any:
        """Create a child organization"""
        return service.create_organization(current(), workspace_access(workspaceId), data, parent_id=organizationId)


@blp.route("/organizations/<organizationId>/parent")
class Parent(MethodView):
    @route_facts("retrieveParentOrganization", role="viewer")
    @blp.response(200, OrganizationSchema)
    @blp.alt_response(204, description="A root has no parent.")
    def get(self, workspaceId: str, organizationId: str) -> Any:
        """Retrieve an organization's parent"""
        parent = service.get_parent(current(), workspace_access(workspaceId), organizationId)
        return Response(status=204) if parent is None else parent


@blp.route("/organizations/<organizationId>/descendants")
class Descendants(MethodView):
    @route_facts("listDescendantOrganizations", role="viewer")
    @blp.response(200, DescendantsSchema)
    def get(self, workspaceId: str, organizationId: str) -> dict[str, Any]:
        """List an organization's descendants, depth-first"""
        return {"data": service.descendants(current(), workspace_access(workspaceId), organizationId)}


@blp.route("/organizations/<organizationId>/limits")
class Limits(MethodView):
    @route_facts("retrieveOrganizationLimits", role="viewer")
    @blp.response(200, OrganizationLimitsSchema)
    def get(self, workspaceId: str, organizationId: str) -> Any:
        """Retrieve what an organization may still use, per product"""
        return capacity.limits(current(), *organization_access(workspaceId, organizationId))


@blp.route("/organizations/<organizationId>/usage")
class Usage(MethodView):
    @route_facts("reportUsage", role="admin")
    @blp.arguments(UsageReportSchema)
    @blp.response(200, LimitEntrySchema)
    def post(self, data: dict[str, Any], workspaceId: str, organizationId: str) -> Any:
        """Report usage: take (positive delta) or release capacity"""
        return capacity.report_usage(current(), workspaceId, organizationId, data["product"], data["delta"])


@blp.route("/capacity")
class Capacity(MethodView):
    @route_facts("retrieveCapacity", role="viewer")
    @blp.response(200, CapacitySchema)
    def get(self, workspaceId: str) -> Any:
        """Retrieve the workspace's capacity pools"""
        return capacity.capacity(current(), usage_access(workspaceId, write=False).workspace)


# -- public: no token -------------------------------------------------------------------

public_blp = Blueprint(
    "Public", __name__, description="Unauthenticated endpoints for retrieving public organization information."
)


@public_blp.route(
    "/organizations/<organizationId>/branding",
    parameters=[
        {
            "in": "path",
            "name": "organizationId",
            "description": "The organization's id (org_...) or its external_id (a UUID).",
        }
    ],
)
class PublicBranding(MethodView):
    @route_facts("retrievePublicBranding", role=None)
    @public_blp.doc(security=[])
    @public_blp.response(200, PublicBrandingSchema)
    @public_blp.alt_response(429, response=RATE_LIMITED)
    def get(self, organizationId: str) -> Any:
        """Retrieve an organization's public branding (by its id or external_id)"""
        state = current()
        throttle(state.public_limiter, "branding")
        return branding.public_branding(state, organizationId)


# The uploaded pictures the `picture` URLs point at: loaded by browsers (an
# <img>), not called by API clients, so not in the OpenAPI document.
pictures_blp = FlaskBlueprint("pictures", __name__)

_PICTURE_HEADERS = {
    # The URL names the picture's digest: what it answers never changes.
    "Cache-Control": "public, max-age=31536000, immutable",
    # Shown on its own, it may load nothing and run nothing.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; sandbox",
    "Cross-Origin-Resource-Policy": "cross-origin",  # for pages on other origins
    "X-Content-Type-Options": "nosniff",
}


@pictures_blp.get("/organizations/<organizationId>/pictures/<pictureId>")
def picture(organizationId: str, pictureId: str) -> Any:
    state = current()
    throttle(state.public_limiter, "picture")
    content_type, data = branding.stored_picture(state, organizationId, pictureId)
    response = Response(data, mimetype=content_type, headers=_PICTURE_HEADERS)
    response.set_etag(pictureId)
    return response.make_conditional(request)
