"""Fixtures of the integration tests."""

from tests.integration.his import start_simulator

__all__ = ["start_simulator"]
