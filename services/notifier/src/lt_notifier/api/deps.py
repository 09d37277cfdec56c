"""Dependencies of the admin routes: the use case (the caller is `leaky_common.api.AdminPrincipal`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from lt_notifier.usecases.admin import SubscriptionAdmin

__all__ = ["Subscriptions"]


def _subscriptions(request: Request) -> SubscriptionAdmin:
    admin: SubscriptionAdmin = request.app.state.subscriptions
    return admin


Subscriptions = Annotated[SubscriptionAdmin, Depends(_subscriptions)]
