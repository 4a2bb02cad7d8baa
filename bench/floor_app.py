"""The floor: the least an authenticated read can cost under the service's own gunicorn settings.

A minimal Flask app that does what every read of the service must do and nothing more: verify the
HS256 bearer token (PyJWT, the same checks of issuer, audience, exp and sub) and run one indexed
SELECT (the caller's membership of the workspace in the path) on a pooled PostgreSQL or SQLite
connection, then answer a small JSON body. `bench/hot_paths.py` serves it with gunicorn.conf.py (the
Procfile's worker class, workers and threads) beside the service, and gives each route of the
service as a ratio to it, measured in the same run.

    gunicorn -c gunicorn.conf.py bench.floor_app:app      # DATABASE_URL, JWT_SECRET
"""

from __future__ import annotations

import os
from typing import Any

import jwt
from flask import Flask, jsonify, request
from sqlalchemy import create_engine, text

from billing.db import normalize_database_url


def create_floor_app(database_url: str, secret: str, issuer: str | None, audience: str | None) -> Flask:
    app = Flask("floor")
    engine = create_engine(normalize_database_url(database_url), pool_size=8, max_overflow=0)
    membership = text("SELECT role FROM workspace_members WHERE workspace_id = :ws AND user_id = :user")

    @app.get("/floor/workspaces/<ws>")
    def read(ws: str) -> Any:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return jsonify(error="authentication_required"), 401
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                issuer=issuer,
                audience=audience,
                options={"require": ["exp", "sub"]},
            )
        except jwt.PyJWTError:
            return jsonify(error="authentication_required"), 401
        with engine.connect() as connection:
            role = connection.execute(membership, {"ws": ws, "user": claims["sub"]}).scalar()
        if role is None:
            return jsonify(error="not_found"), 404
        return jsonify(id=ws, role=role)

    return app


def __getattr__(name: str) -> Flask:
    if name == "app":
        env = os.environ
        application = create_floor_app(
            env["DATABASE_URL"], env["JWT_SECRET"], env.get("JWT_ISSUER") or None, env.get("JWT_AUDIENCE") or None
        )
        globals()["app"] = application
        return application
    raise AttributeError(name)
