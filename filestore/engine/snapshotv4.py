"""Reading a version 4 index snapshot, so that a store written by the previous release opens
without replaying its whole log (its next snapshot is version 5).

Version 4 body fields (besides those every version has): ``keys`` (text),
``offsets``/``sizes``/``scope_ids``/``seqs`` (packed little-endian
u64/u32/u32/u64 arrays, one per key), ``scope_count`` and ``scope_columns``
(the distinct owner scopes as four texts, env, tenant_id, team and user,
each the scopes' ids joined by newlines; an empty line for no team or
user), ``lookup`` (packed u32 positions of the keys the user lookup points
at), ``wait_ids``/``wait_hashes`` and ``deadline_ids``/``deadlines`` (as in
version 5, ``filestore.engine.snapshotcolumns``).
"""

from __future__ import annotations

import array
from collections.abc import Mapping
from typing import Any

from filestore.engine.columns import Owner
from filestore.engine.index import Index
from filestore.engine.snapshotcolumns import deadlines_by_position, positions, unpack, waits_by_position
from filestore.ids import EnvId, TeamId, TenantId, UserId

_SCOPE_FIELDS = 4


def _packed(data: object, typecode: str, count: int, field: str) -> array.array[int]:
    if not isinstance(data, bytes):
        raise ValueError(f"{field} is not packed")
    return unpack(typecode, data, count, field)


def decode_v4(body: Mapping[str, Any]) -> tuple[Index, list[str]]:
    """The index a version 4 body holds, and its keys; ``ValueError`` (or ``KeyError``,
    ``TypeError``) if any column is malformed."""
    keys = body["keys"]
    if not isinstance(keys, list) or not set(map(type, keys)) <= {str}:
        raise ValueError("keys is not a list of text")
    count = len(keys)
    columns, scope_count = body["scope_columns"], body["scope_count"]
    if (
        not isinstance(columns, list)
        or len(columns) != _SCOPE_FIELDS
        or not isinstance(scope_count, int)
        or not all(isinstance(column, str) for column in columns)
    ):
        raise ValueError("scope_columns is not four texts")
    envs, tenants, teams, users = columns
    owners: dict[Owner, int] = {}
    scope_owners = [
        owners.setdefault(owner, len(owners))
        for owner in zip(
            EnvId.parse_joined(envs, scope_count, optional=False, field="scope.env"),
            TenantId.parse_joined(tenants, scope_count, optional=False, field="scope.tenant_id"),
            TeamId.parse_joined(teams, scope_count, optional=True, field="scope.team"),
            strict=True,
        )
    ]
    scope_users = UserId.parse_joined(users, scope_count, optional=True, field="scope.user", typed=False)
    scope_ids = _packed(body["scope_ids"], "I", count, "scope_ids")
    if scope_ids and max(scope_ids) >= scope_count:
        raise ValueError("a scope number names no scope")
    lookup = body["lookup"]
    if not isinstance(lookup, bytes):
        raise ValueError("lookup is not packed")
    index = Index.from_columns(
        keys,
        _packed(body["offsets"], "Q", count, "offsets"),
        _packed(body["sizes"], "I", count, "sizes"),
        list(owners),
        array.array("I", map(scope_owners.__getitem__, scope_ids)),
        list(map(scope_users.__getitem__, scope_ids)),
        _packed(body["seqs"], "Q", count, "seqs"),
        positions(lookup, count),
        waits_by_position(body["wait_ids"], body["wait_hashes"], count),
        deadlines_by_position(body["deadline_ids"], body["deadlines"], count),
    )
    return index, keys
