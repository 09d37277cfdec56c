"""Bucket sizes per team (precedence key > team > org > settings) and thresholds at a lowered limit."""

from __future__ import annotations

from dataclasses import replace

from lt_quota.domain import (
    BucketDefaults,
    BucketSizes,
    bucket_sizes,
    default_bucket_sizes,
    thresholds_crossed,
)
from lt_quota.domain.records import BucketOverrides, KeyRecord, OrgSettings

ORG = OrgSettings("o1", "default", "UTC", 10, True, 10_000_000, False, False, key_requests_per_period=50)
DEFAULTS = BucketDefaults(BucketSizes(600, 200_000, 600, 200_000), {"pro": 2.0}, 2.0)
TEAM = BucketOverrides(key_requests_per_period=20, user_tokens_per_period=9_000)


def test_a_teams_sizes_come_before_the_orgs_and_are_scaled_like_them() -> None:
    assert default_bucket_sizes(DEFAULTS, ORG, "standard", "user") == BucketSizes(50, 200_000, 600, 200_000)
    assert default_bucket_sizes(DEFAULTS, ORG, "standard", "user", TEAM) == BucketSizes(
        20, 200_000, 600, 9_000
    )
    assert default_bucket_sizes(DEFAULTS, ORG, "pro", "user", TEAM) == BucketSizes(40, 400_000, 1200, 18_000)
    # Nothing set on the team: the org's, then the settings'.
    assert default_bucket_sizes(DEFAULTS, ORG, "standard", "user", BucketOverrides()).key_requests == 50


def test_a_keys_own_size_still_wins_over_its_team() -> None:
    key = KeyRecord(
        "k1", "u1", "o1", "t1", "user", "u@x", "active", None, False, "p", org=ORG, team_buckets=TEAM
    )
    assert bucket_sizes(DEFAULTS, key).key_requests == 20
    assert bucket_sizes(DEFAULTS, replace(key, rate_limit_requests=7)).key_requests == 7


def test_a_lowered_limit_reaches_the_thresholds_of_the_usage_at_the_new_limit() -> None:
    assert thresholds_crossed(500, 1000) == []
    assert thresholds_crossed(500, 600) == [80]
    assert thresholds_crossed(500, 500) == [80, 90, 100]
    assert thresholds_crossed(500, 0) == []
