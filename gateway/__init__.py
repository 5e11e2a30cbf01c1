"""The HTTP API on Starlette: the hot path, API keys and scopes, coalescing requests into one
call per host, health. See README.md beside this file."""

from gateway.app import create_app
from gateway.coalescer import Coalescer
from gateway.config import GatewayConfig
from gateway.errors import ApiError
from gateway.hosts import HostBusy, HostFailed, HostTransport, HostUnavailable, RayHosts
from gateway.keys import Scope

__all__ = [
    "ApiError",
    "Coalescer",
    "GatewayConfig",
    "HostBusy",
    "HostFailed",
    "HostTransport",
    "HostUnavailable",
    "RayHosts",
    "Scope",
    "create_app",
]
