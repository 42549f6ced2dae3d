"""TensorDock v2 adapter (reference: providers-api.md sections 1, 2 and 6)."""

from gpushop.providers.tensordock.pricing import Sizing as Sizing
from gpushop.providers.tensordock.provider import TensorDockProvider as TensorDockProvider
