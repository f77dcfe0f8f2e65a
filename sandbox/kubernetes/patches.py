"""The three patch formats the API server accepts for built-in types.

JSON patch (RFC 6902) is what `kubectl rollout undo` sends; JSON merge patch
(RFC 7386) is what `kubectl scale` and `kubectl annotate` send; strategic merge
patch is what `kubectl set image`, `rollout pause/resume/restart` and the
Python client (for dict bodies) send. The strategic merge here knows the merge
keys of the lists inside a Deployment (containers by name, ports by
containerPort, ...) and the directives kubectl emits (`$patch`,
`$setElementOrder/`, `$deleteFromPrimitiveList/`, `$retainKeys`); every other
list is replaced, which is also what the real server does for atomic lists.
"""

from __future__ import annotations

import copy
from typing import Any

from sandbox.kubernetes.objects import ApiError

MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "volumes": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "resourceClaims": "name",
    "readinessGates": "conditionType",
}
MERGED_PRIMITIVE_LISTS = frozenset({"finalizers"})
ORDER = "$setElementOrder/"
DELETE_FROM = "$deleteFromPrimitiveList/"


def _bad(message: str) -> ApiError:
    return ApiError(422, "Invalid", f"the server rejected our request: {message}")


# --- JSON patch ------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise _bad(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    node = doc
    for token in tokens[:-1]:
        try:
            node = node[int(token)] if isinstance(node, list) else node[token]
        except (KeyError, IndexError, ValueError, TypeError):
            raise _bad(f"doc is missing path: {path!r}") from None
    return node


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens, path), tokens[-1]
    try:
        return parent[int(last)] if isinstance(parent, list) else parent[last]
    except (KeyError, IndexError, ValueError, TypeError):
        raise _bad(f"doc is missing key: {path!r}") from None


def _remove(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    parent, last = _parent(doc, tokens, path), tokens[-1]
    _get(doc, path)
    return parent.pop(int(last) if isinstance(parent, list) else last)


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent, last = _parent(doc, tokens, path), tokens[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if index > len(parent):
            raise _bad(f"index out of range: {path!r}")
        parent.insert(index, value)
    elif isinstance(parent, dict):
        parent[last] = value
    else:
        raise _bad(f"cannot add at {path!r}")
    return doc


def _replace(doc: Any, path: str, value: Any) -> Any:
    if not _pointer(path):
        return value
    _get(doc, path)
    tokens = _pointer(path)
    parent, last = _parent(doc, tokens, path), tokens[-1]
    parent[int(last) if isinstance(parent, list) else last] = value
    return doc


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch; refuse it whole if one operation fails."""
    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest", "json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in operations:
        kind, path = op.get("op"), op.get("path", "")
        value = copy.deepcopy(op.get("value"))
        if kind == "add":
            doc = _add(doc, path, value)
        elif kind == "remove":
            _remove(doc, path)
        elif kind == "replace":
            doc = _replace(doc, path, value)
        elif kind in ("move", "copy"):
            moved = (
                _remove(doc, op["from"]) if kind == "move" else copy.deepcopy(_get(doc, op["from"]))
            )
            doc = _add(doc, path, moved)
        elif kind == "test":
            if _get(doc, path) != value:
                raise _bad(f"testing value {path!r} failed")
        else:
            raise _bad(f"unexpected kind of operation {kind!r}")
    return doc


# --- JSON merge patch --------------------------------------------------------------------------


def merge_patch(doc: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- strategic merge patch ----------------------------------------------------------------------


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _merge_list(original: list[Any], patch: list[Any], key: str) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [_strip(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    result = copy.deepcopy(original)
    for item in patch:
        if not isinstance(item, dict):
            result.append(copy.deepcopy(item))
            continue
        same = [
            i
            for i, old in enumerate(result)
            if isinstance(old, dict) and old.get(key) == item.get(key)
        ]
        if item.get("$patch") == "delete":
            result = [old for i, old in enumerate(result) if i not in same]
        elif same:
            result[same[0]] = strategic_merge_patch(result[same[0]], item)
        else:
            result.append(_strip(item))
    return result


def _reorder(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def ident(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    ranked = {ident(v) if isinstance(v, dict) else v: i for i, v in enumerate(order)}
    ordered = sorted((i for i in items if ident(i) in ranked), key=lambda i: ranked[ident(i)])
    return ordered + [i for i in items if ident(i) not in ranked]


def _apply_list_directives(result: dict[str, Any], patch: dict[str, Any]) -> None:
    for name, values in patch.items():
        if name.startswith(DELETE_FROM):
            field = name[len(DELETE_FROM) :]
            result[field] = [v for v in result.get(field) or [] if v not in values]
    for name, order in patch.items():
        if name.startswith(ORDER) and isinstance(result.get(name[len(ORDER) :]), list):
            field = name[len(ORDER) :]
            result[field] = _reorder(result[field], order, MERGE_KEYS.get(field))


def _merge_value(field: str, old: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return strategic_merge_patch(old, value)
    if isinstance(value, list) and field in MERGE_KEYS:
        return _merge_list(old if isinstance(old, list) else [], value, MERGE_KEYS[field])
    if isinstance(value, list) and field in MERGED_PRIMITIVE_LISTS:
        old_items = old if isinstance(old, list) else []
        return old_items + [v for v in value if v not in old_items]
    return copy.deepcopy(value)


def strategic_merge_patch(doc: Any, patch: Any) -> Any:
    """Apply a strategic merge patch to a JSON object (None means: delete this map)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return _strip(patch)
    if directive == "delete":
        return None
    result = copy.deepcopy(doc) if isinstance(doc, dict) else {}
    for field, value in patch.items():
        if field.startswith("$"):
            continue
        merged = None if value is None else _merge_value(field, result.get(field), value)
        if merged is None:
            result.pop(field, None)
        else:
            result[field] = merged
    _apply_list_directives(result, patch)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


PATCHERS = {
    "application/json-patch+json": json_patch,
    "application/merge-patch+json": merge_patch,
    "application/strategic-merge-patch+json": strategic_merge_patch,
}


def apply_patch(content_type: str, doc: Any, patch: Any) -> Any:
    """Apply `patch` of the given media type to `doc`."""
    patcher = PATCHERS.get(content_type.split(";", 1)[0].strip())
    if patcher is None:
        raise ApiError(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types "
            f"include: {', '.join(PATCHERS)}",
        )
    return patcher(doc, patch)
