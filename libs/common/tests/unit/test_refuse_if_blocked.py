"""`refuse_if_blocked`: a suspended user or frozen key changes nothing anywhere; a restricted key changes no
admin setting; reads stay open."""

import pytest

from leaky_common.auth import Principal, refuse_if_blocked
from leaky_common.errors import Forbidden


def test_blocked_callers_may_read_but_not_change() -> None:
    blocked = Principal(user_id="u", org_id="o", management_block="key_frozen")
    for method in ("GET", "HEAD", "OPTIONS"):
        refuse_if_blocked(blocked, method)
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        with pytest.raises(Forbidden) as exc:
            refuse_if_blocked(blocked, method)
        assert exc.value.code == "key_frozen"


def test_restricted_keys_change_no_admin_setting() -> None:
    restricted = Principal(user_id="u", org_id="o", role="admin", key_restricted=True)
    refuse_if_blocked(restricted, "POST")  # its own (non-admin) routes are bounded by quota's key rules
    refuse_if_blocked(restricted, "GET", admin=True)
    with pytest.raises(Forbidden) as exc:
        refuse_if_blocked(restricted, "PATCH", admin=True)
    assert exc.value.code == "restricted_key"
    refuse_if_blocked(Principal(user_id="u", org_id="o", role="admin"), "PATCH", admin=True)
