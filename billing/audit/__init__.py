"""The audit trail: who changed which part of a workspace's billing, when, and through which door.

`trail` records (in the transaction of each change), `service` lists and prunes,
`routes` serves `GET /workspaces/{w}/audit-events`."""
