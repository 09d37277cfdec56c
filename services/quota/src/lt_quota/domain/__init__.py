"""Pure rules of the quota service: keys, periods, the balancer, key policy, denials, thresholds, top-ups
and freezes. No I/O: nothing here reads Postgres or Redis, so every rule is unit-tested on plain records."""

from lt_quota.domain.balancer import Cap, Leg, legs_of_reservation, plan, source_group
from lt_quota.domain.denials import APPROVAL_GUIDE, decision_label, denial, denied_cap, no_pool_for_model
from lt_quota.domain.freezes import longest_freeze, session_target, ttl_ms
from lt_quota.domain.keys import KEY_PREFIX_LEN, generate_api_key, hash_api_key, key_prefix, new_id
from lt_quota.domain.outcomes import AdmitDenied, AdmitGranted, parse_admit_result, retry_after_seconds
from lt_quota.domain.periods import Period, counter_ttl_ms, period_of
from lt_quota.domain.policy import (
    PRIORITIES,
    BucketDefaults,
    BucketSizes,
    bucket_sizes,
    check_key_policy,
    check_session,
    default_bucket_sizes,
    privacy_strict,
)
from lt_quota.domain.thresholds import ANNOUNCED_OWNERS, THRESHOLDS, thresholds_crossed, thresholds_reached
from lt_quota.domain.topups import UNIT_NAMES, adjusted_limit, may_top_up, missing_pool_reason, refusal

__all__ = [
    "ANNOUNCED_OWNERS",
    "APPROVAL_GUIDE",
    "KEY_PREFIX_LEN",
    "PRIORITIES",
    "THRESHOLDS",
    "UNIT_NAMES",
    "AdmitDenied",
    "AdmitGranted",
    "BucketDefaults",
    "BucketSizes",
    "Cap",
    "Leg",
    "Period",
    "adjusted_limit",
    "bucket_sizes",
    "check_key_policy",
    "check_session",
    "counter_ttl_ms",
    "decision_label",
    "default_bucket_sizes",
    "denial",
    "denied_cap",
    "generate_api_key",
    "hash_api_key",
    "key_prefix",
    "legs_of_reservation",
    "longest_freeze",
    "may_top_up",
    "missing_pool_reason",
    "new_id",
    "no_pool_for_model",
    "parse_admit_result",
    "period_of",
    "plan",
    "privacy_strict",
    "refusal",
    "retry_after_seconds",
    "session_target",
    "source_group",
    "thresholds_crossed",
    "thresholds_reached",
    "ttl_ms",
]
