"""Management (today's governance): orgs, teams, users, keys, pools, approvals, session budgets, quota views
and Leaky Tokens' aliases. Admin use cases act within the admin's org; a user sees only their own data and a
manager their teams'. Changes that affect admission invalidate the shared caches; announced changes go
through the outbox in the same transaction."""

from dataclasses import dataclass

from lt_quota.usecases.management.approvals import Approvals
from lt_quota.usecases.management.keys import Keys
from lt_quota.usecases.management.orgs import Orgs
from lt_quota.usecases.management.pools import Pools
from lt_quota.usecases.management.sessions import Sessions
from lt_quota.usecases.management.teams import Teams
from lt_quota.usecases.management.tokens import TokenAliases
from lt_quota.usecases.management.users import NewUser, Users
from lt_quota.usecases.management.views import PoolViews

__all__ = [
    "Approvals",
    "Keys",
    "Management",
    "NewUser",
    "Orgs",
    "PoolViews",
    "Pools",
    "Sessions",
    "Teams",
    "TokenAliases",
    "Users",
]


@dataclass(frozen=True)
class Management:
    """The management use cases, one per resource."""

    views: PoolViews
    users: Users
    teams: Teams
    orgs: Orgs
    pools: Pools
    keys: Keys
    approvals: Approvals
    sessions: Sessions
    tokens: TokenAliases
