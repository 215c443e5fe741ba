"""Provider adapters: pure translation between the gateway and each provider's API."""
