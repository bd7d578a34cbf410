"""Wire shapes of artifacts: bytes travel as standard base64 with padding.

The socket events and the HTTP routes show the same rows in different shapes: the socket
acks leave out ``dataEncryptionKey``, the HTTP answers carry it, and the HTTP listing leaves
out the body.
"""

from __future__ import annotations

import base64
from typing import Any

from happy_socket import Row


def b64(data: bytes) -> str:
    """Standard base64 with padding."""
    return base64.b64encode(bytes(data)).decode("ascii")


def _artifact(row: Row, *, body: bool, key: bool) -> dict[str, Any]:
    """An artifact's wire fields; ``body`` and ``dataEncryptionKey`` only where asked."""
    out: dict[str, Any] = {
        "id": row["id"],
        "header": b64(row["header"]),
        "headerVersion": int(row["header_version"]),
    }
    if body:
        out["body"] = b64(row["body"])
        out["bodyVersion"] = int(row["body_version"])
    if key:
        out["dataEncryptionKey"] = b64(row["data_encryption_key"])
    out["seq"] = int(row["seq"])
    out["createdAt"] = int(row["created_at"])
    out["updatedAt"] = int(row["updated_at"])
    return out


def serialize(row: Row) -> dict[str, Any]:
    """The artifact in socket acks (``artifact-read``, ``artifact-create``)."""
    return _artifact(row, body=True, key=False)


def full(row: Row) -> dict[str, Any]:
    """The artifact in HTTP answers (``GET /v1/artifacts/:id``, ``POST /v1/artifacts``)."""
    return _artifact(row, body=True, key=True)


def listing(row: Row) -> dict[str, Any]:
    """One item of ``GET /v1/artifacts``: everything but the body."""
    return _artifact(row, body=False, key=True)


def new_artifact_body(row: Row) -> dict[str, Any]:
    """The ``new-artifact`` update body."""
    return {
        "t": "new-artifact",
        "artifactId": row["id"],
        "seq": int(row["seq"]),
        "header": b64(row["header"]),
        "headerVersion": int(row["header_version"]),
        "body": b64(row["body"]),
        "bodyVersion": int(row["body_version"]),
        "dataEncryptionKey": b64(row["data_encryption_key"]),
        "createdAt": int(row["created_at"]),
        "updatedAt": int(row["updated_at"]),
    }


def update_artifact_body(row: Row, parts: tuple[str, ...]) -> dict[str, Any]:
    """The ``update-artifact`` body: the written ``parts`` (``header``/``body``) of ``row``."""
    body: dict[str, Any] = {"t": "update-artifact", "artifactId": row["id"]}
    for name in parts:
        body[name] = {"value": b64(row[name]), "version": int(row[f"{name}_version"])}
    return body
