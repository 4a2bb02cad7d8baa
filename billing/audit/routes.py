"""HTTP route for the audit trail."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView

from billing.access import workspace_access
from billing.audit import service
from billing.blueprints import authenticated_blueprint
from billing.openapi import route_facts
from billing.state import current
from schemas.audit import AuditEventListQuerySchema, AuditEventListSchema

blp = authenticated_blueprint(
    "audit",
    __name__,
    url_prefix="/workspaces/<workspaceId>/audit-events",
    description="Who changed the workspace's billing, when, and through which door (owners and admins).",
)


@blp.route("")
class AuditEvents(MethodView):
    @route_facts("listAuditEvents", role="admin", forbidden="FORBIDDEN_AUDIT")
    @blp.arguments(AuditEventListQuerySchema, location="query")
    @blp.response(200, AuditEventListSchema)
    def get(self, query: dict[str, Any], workspaceId: str) -> Any:
        """List the workspace's audit trail, newest first"""
        return service.list_events(current(), workspace_access(workspaceId), query)
