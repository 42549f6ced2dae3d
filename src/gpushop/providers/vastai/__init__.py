"""Vast.ai adapter."""

from gpushop.providers.vastai.provider import VastAIProvider as VastAIProvider
