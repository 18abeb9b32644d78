"""The light Python client and trainer adapters: no torch, no server dependencies.

from arbiter.clients import RewardClient
RewardClient("http://127.0.0.1:8000").score("prompt", ["response one", "response two"]).scores
"""

from arbiter.clients.annotation_client import AnnotationClient
from arbiter.clients.client import AsyncRewardClient, RewardClient
from arbiter.clients.errors import RewardServerError
from arbiter.clients.retry import Retry

__all__ = ["AnnotationClient", "AsyncRewardClient", "Retry", "RewardClient", "RewardServerError"]
