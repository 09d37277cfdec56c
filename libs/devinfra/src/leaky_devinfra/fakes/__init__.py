"""Local fakes of third-party services, each speaking the real service's wire format."""
