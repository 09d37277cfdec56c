"""The notifier's records and rules, without I/O: what an event says, on which channel, to whom.

`sign` is re-exported for `lt_notifier.fakes` (the fake channel receivers), which imports it from here.
"""

from lt_notifier.domain.webhook import sign

__all__ = ["sign"]
