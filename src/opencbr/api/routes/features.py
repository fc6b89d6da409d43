"""Feature flags: /v3/{project_id}/cbr-features[/{feature_key}] (the SDK reads the whole
body as one `{key: value}` object)."""

from __future__ import annotations

from itertools import islice
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from opencbr.api.deps import CallerDep, SettingsDep
from opencbr.services import features

router = APIRouter(prefix="/v3/{project_id}/cbr-features", tags=["features"])
Limit = Annotated[int | None, Query(ge=1)]
Offset = Annotated[int, Query(ge=0)]


@router.get("")
def list_features(
    ctx: CallerDep, settings: SettingsDep, limit: Limit = None, offset: Offset = 0
) -> dict[str, Any]:
    known = features.features(settings, ctx.region)
    end = None if limit is None else offset + limit
    return dict(islice(known.items(), offset, end))


@router.get("/{feature_key}")
def show_feature(
    feature_key: Annotated[str, Path(max_length=255)],
    ctx: CallerDep,
    settings: SettingsDep,
    limit: Limit = None,  # accepted as the SDK sends them; one key has nothing to page
    offset: Offset = 0,
) -> dict[str, Any]:
    return features.feature(settings, ctx.region, feature_key)
