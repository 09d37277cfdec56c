"""The purchase saga's I/O: all SQL (`repository`), the payment provider's HTTP client."""
