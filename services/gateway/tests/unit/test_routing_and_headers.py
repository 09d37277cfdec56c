import pytest

from leaky_common.contracts import RateLimitState
from leaky_common.errors import InvalidRequest
from lt_gateway.domain.headers import ratelimit_headers
from lt_gateway.domain.routing import normal_segments, owner_of


@pytest.mark.parametrize(
    ("path", "owner"),
    [
        ("/v1/admin/users", "quota"),
        ("/v1/admin/teams/t1/members/u1", "quota"),
        ("/v1/admin/notifications/webhooks", "notifier"),
        ("/v1/admin/purchases", "saga"),
        ("/v1/users/me/quota", "quota"),
        ("/v1/approvals", "quota"),
        ("/v1/purchases", "saga"),
        ("/v1/purchases/abc", "saga"),
        ("/api/v1/tokens/purchase", "saga"),
        ("/api/v1/tokens/status", "quota"),
        ("/v1/analytics/usage", "analytics"),
        ("/api/v1/analytics/usage", "analytics"),
        ("/v1/approvals/pending", "quota"),
        ("/v1/approvals/a1/approve", "quota"),
        ("/v1/nothing", None),
        ("/v1/purchasesx", None),
        ("/v1/users/x/internal/admit", None),
        ("/v1/admin/users/u1/keys/k1/extra", None),
    ],
)
def test_owner_of_matches_only_public_routes(path: str, owner: str | None) -> None:
    assert owner_of(normal_segments(path.encode(), path)) == owner


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"/v1/users/%2e%2e/%2e%2e/internal/admit", "/v1/users/../../internal/admit"),
        (b"/v1/users/%2E%2E/internal/authenticate", "/v1/users/../internal/authenticate"),
        (b"/v1/users/../../internal/admit", "/v1/users/../../internal/admit"),
        (b"/v1/users/./me", "/v1/users/./me"),
        (b"/v1/users/me%2fkeys", "/v1/users/me/keys"),
        (b"/v1/users/me%5ckeys", "/v1/users/me\\keys"),
        (b"/v1/users/me\\keys", "/v1/users/me\\keys"),
        (b"/v1/users/%252e%252e/internal", "/v1/users/%2e%2e/internal"),
        (b"/v1/users//me", "/v1/users//me"),
    ],
)
def test_paths_not_in_normal_form_are_400(raw: bytes, path: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        normal_segments(raw, path)
    assert (err.value.status, err.value.code) == (400, "invalid_path")


def test_ratelimit_headers_cover_openai_and_ietf_forms() -> None:
    h = ratelimit_headers(
        RateLimitState(
            limit_requests=600,
            remaining_requests=599,
            reset_requests_s=0.1,
            limit_tokens=200_000,
            remaining_tokens=199_000,
            reset_tokens_s=0.3,
        )
    )
    assert h["x-ratelimit-limit-requests"] == "600"
    assert h["x-ratelimit-remaining-tokens"] == "199000"
    assert h["x-ratelimit-reset-requests"] == "0.100s"
    assert h["ratelimit-policy"] == '"requests";q=600;w=60, "tokens";q=200000;w=60'
    assert h["ratelimit"] == '"requests";r=599;t=1, "tokens";r=199000;t=1'


def test_models_are_filtered_by_the_keys_allowed_models() -> None:
    from leaky_common.auth import Principal
    from lt_gateway.adapters.model_table import ModelTable
    from lt_gateway.domain.models import may_use as _may_use

    table = ModelTable.load(None)
    gpt, emb = table.get("mock-gpt"), table.get("mock-embedding")
    assert gpt is not None and emb is not None
    everyone = Principal(user_id="u", org_id="o", allowed_models=None)
    assert _may_use(everyone, gpt) and _may_use(everyone, emb)
    only_chat = Principal(user_id="u", org_id="o", allowed_models=("mock-g*",))
    assert _may_use(only_chat, gpt) and not _may_use(only_chat, emb)
    nothing = Principal(user_id="u", org_id="o", allowed_models=())
    assert not _may_use(nothing, gpt)
