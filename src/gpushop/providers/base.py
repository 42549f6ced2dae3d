"""The contract every provider adapter fulfils."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from gpushop.models import CreateRequest, Feature, Instance, Offer, OfferQuery, SortKey


@dataclass(frozen=True, slots=True)
class CreateResult:
    instance_id: str
    # False when the provider made the instance but could not start it (Vast's
    # ``success: false`` with a ``new_contract``): it exists, bills storage, must be destroyed.
    started: bool


@runtime_checkable
class Provider(Protocol):
    """A GPU marketplace. Every method is async and raises only ``ProviderError``s."""

    name: str  # "vastai": the prefix of offer ids
    display_name: str  # "Vast.ai": for messages
    ssh_user: str  # who we log in as: "root" on Vast.ai containers, "user" on TensorDock VMs

    def supports(self, feature: Feature) -> bool: ...

    @property
    def has_credentials(self) -> bool: ...

    async def search_offers(
        self, query: OfferQuery, *, pool: int, sort: SortKey = SortKey.PRICE
    ) -> list[Offer]:
        """Offers matching ``query``, at most ``pool`` of them, best candidates first."""
        ...

    async def market_offers(self, disk_gb: float) -> list[Offer]:
        """A broad sample of the on-demand market, for price statistics."""
        ...

    async def list_instances(self, label_prefix: str | None = None) -> list[Instance]:
        """Our instances; only those whose label starts with ``label_prefix`` when given."""
        ...

    async def get_instance(self, instance_id: str) -> Instance | None:
        """The instance's current state, or None when it does not exist (any more)."""
        ...

    async def create_instance(self, request: CreateRequest) -> CreateResult:
        """Create an instance. Never retried blindly (see DESIGN.md: create is not idempotent)."""
        ...

    async def destroy_instance(self, instance_id: str) -> bool:
        """Destroy it; False when it was already gone."""
        ...

    async def set_state(self, instance_id: str, state: str) -> bool:
        """Start ("running") or stop ("stopped"); False when the provider queued it."""
        ...

    async def change_bid(self, instance_id: str, price: float) -> None:
        """Set an interruptible instance's bid (USD/h for the GPUs, storage apart); an outbid
        one whose bid wins again runs again. ``Unsupported`` where the provider has no bids."""
        ...

    def watchdog_script(self, deadline: float) -> str | None:
        """Lines of the instance's start script that stop the instance at ``deadline`` (UTC
        epoch seconds) with no key of ours on it (None: the provider has no way)."""
        ...

    def move_deadline_command(self, deadline: float) -> str | None:
        """A command that, run on the instance over SSH, moves its watchdog's deadline."""
        ...

    async def charges(self, start: float, end: float) -> list[dict[str, Any]]:
        """What the provider billed per instance between two epochs (``Feature.CHARGES``)."""
        ...

    async def ensure_ssh_key(self, public_key: str) -> None:
        """Register ``public_key`` with the account if it is not yet (idempotent)."""
        ...

    async def ping(self) -> None:
        """One cheap call that shows the API answers (and the key works, when there is one)."""
        ...

    async def aclose(self) -> None: ...
