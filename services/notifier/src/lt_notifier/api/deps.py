"""Dependencies of the admin routes: the caller (an admin, from `leaky_common.api`) and the use cases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from leaky_common.api import AdminPrincipal
from lt_notifier.usecases.admin import SubscriptionAdmin

__all__ = ["Admin", "Subscriptions"]


def _subscriptions(request: Request) -> SubscriptionAdmin:
    admin: SubscriptionAdmin = request.app.state.subscriptions
    return admin


Admin = AdminPrincipal
Subscriptions = Annotated[SubscriptionAdmin, Depends(_subscriptions)]
