"""An offline emulator of the Vast.ai REST API and of TensorDock API v2 (see docs/emulator.md).

It stands beside the product: it imports nothing from the rest of gpushop, so a client tested
against it is checked against the published API, not against itself.
"""

from gpushop.emulator.config import MAX_OFFERS, EmulatorConfig
from gpushop.emulator.control import EmulatorControl
from gpushop.emulator.server import EmulatorThread, serve

__all__ = ["MAX_OFFERS", "EmulatorConfig", "EmulatorControl", "EmulatorThread", "serve"]
