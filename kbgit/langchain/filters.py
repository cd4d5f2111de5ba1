"""Exact metadata filters for LangChain-style searches (the FAISS/Chroma dialect).

``{"team": "sre"}`` is equality; a list value means "one of"; operators ``$eq $ne $gt
$gte $lt $lte $in $nin $exists`` apply to one key; ``$and``/``$or``/``$not`` combine
filters. A callable ``filter(metadata) -> bool`` is used as is.

>>> match = metadata_matcher({"team": "sre", "year": {"$gte": 2024}})
>>> match({"team": "sre", "year": 2025}), match({"team": "dev", "year": 2025})
(True, False)
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import QueryError

Matcher = Callable[[Mapping[str, Any]], bool]

_MISSING = object()


def _compare(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def check(value: Any, arg: Any) -> bool:
        if value is _MISSING:
            return False
        try:
            return bool(op(value, arg))
        except TypeError:  # e.g. "a" < 3: not a match rather than an error
            return False

    return check


def _in(value: Any, arg: Any) -> bool:
    return value is not _MISSING and value in _as_list(arg)


_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "$eq": lambda v, a: v is not _MISSING and v == a,
    "$ne": lambda v, a: v is _MISSING or v != a,
    "$gt": _compare(operator.gt),
    "$gte": _compare(operator.ge),
    "$lt": _compare(operator.lt),
    "$lte": _compare(operator.le),
    "$in": _in,
    "$nin": lambda v, a: not _in(v, a),
    "$exists": lambda v, a: (v is not _MISSING) == bool(a),
}


def _as_list(arg: Any) -> list[Any]:
    if not isinstance(arg, list | tuple | set | frozenset):
        raise QueryError(f"$in/$nin need a list, got {arg!r}")
    return list(arg)


def _condition(key: str, cond: Any) -> Matcher:
    if isinstance(cond, Mapping) and cond and all(str(k).startswith("$") for k in cond):
        unknown = sorted(set(cond) - set(_OPS))
        if unknown:
            raise QueryError(
                f"unknown filter operator {unknown[0]} on {key!r}",
                hint=f"supported: {', '.join(sorted(_OPS))}",
            )
        checks = [(_OPS[op], arg) for op, arg in cond.items()]
        if any(op in ("$in", "$nin") for op in cond):
            for op in ("$in", "$nin"):
                if op in cond:
                    _as_list(cond[op])
        return lambda meta: all(fn(meta.get(key, _MISSING), arg) for fn, arg in checks)
    if isinstance(cond, list):
        return lambda meta: meta.get(key, _MISSING) in cond
    return lambda meta: key in meta and meta[key] == cond


def metadata_matcher(spec: Mapping[str, Any] | Callable[[Mapping[str, Any]], bool]) -> Matcher:
    """Compile a metadata filter into a predicate over a metadata dict."""
    if callable(spec) and not isinstance(spec, Mapping):
        return lambda meta: bool(spec(meta))
    if not isinstance(spec, Mapping):
        raise QueryError(f"a metadata filter is a dict or a callable, got {type(spec).__name__}")
    parts: list[Matcher] = []
    for key, cond in spec.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, list):
                raise QueryError(f"{key} needs a list of filters")
            subs = [metadata_matcher(c) for c in cond]
            combine = all if key == "$and" else any
            parts.append(lambda meta, subs=subs, combine=combine: combine(s(meta) for s in subs))
        elif key == "$not":
            sub = metadata_matcher(cond)
            parts.append(lambda meta, sub=sub: not sub(meta))
        elif str(key).startswith("$"):
            raise QueryError(f"unknown filter operator {key}", hint="use $and, $or or $not")
        else:
            parts.append(_condition(str(key), cond))
    return lambda meta: all(p(meta) for p in parts)


__all__ = ["Matcher", "metadata_matcher"]
