"""Analytics records and rules, pure: no database, broker or HTTP here."""
