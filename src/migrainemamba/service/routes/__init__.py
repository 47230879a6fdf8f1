"""The product's REST routes, mounted by ``service.app`` (under /api/v1 in the BentoML service)."""
