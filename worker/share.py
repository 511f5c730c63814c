"""The fair share: how a worker divides its prefetch between uploads, and which held row it starts next.

Each tenant with work gets a share of the rows a worker holds in proportion to its weight (1
unless `tenants.weight` says otherwise), and a tenant's share is divided equally between its
uploads, oldest first. The rows held are then started in weighted turns: the next row is the
oldest held row of the tenant that has started the fewest rows for its weight, and within it
of the upload that has started the fewest. A tenant that comes back after a while starts level
with the others, not with the credit it did not use. Both are pure: the consumer applies them.
"""

import collections
import heapq
from collections.abc import Iterable, Sequence

from kubejob.ledger import OpenUpload
from kubejob.message import Delivery, upload_of

UNKNOWN = ("", 1)  # the tenant and weight of a row whose upload the ledger did not have open


def allocate(uploads: Sequence[OpenUpload], prefetch: int) -> dict[str, int]:
    """The prefetch of each upload's consumer (by upload id), summing to at most `prefetch`.

    `uploads` are the served ones, oldest first. Tenants share `prefetch` by weight, each at
    least 1; a tenant's uploads share its part equally, each at least 1, the oldest taking what
    does not divide. An upload left without a slot (more uploads than `prefetch`) is not
    consumed until an older one ends.
    """
    if not uploads:
        return {}
    by_tenant: dict[str, list[OpenUpload]] = collections.defaultdict(list)
    for upload in uploads:
        by_tenant[upload.tenant].append(upload)
    tenants = list(by_tenant)  # in the order of each one's oldest upload
    slots = _divide(prefetch, [by_tenant[t][0].weight for t in tenants])
    shares: dict[str, int] = {}
    for tenant, tenant_slots in zip(tenants, slots, strict=True):
        theirs = by_tenant[tenant]
        for upload, upload_slots in zip(theirs, _divide(tenant_slots, [1] * len(theirs)), strict=True):
            if upload_slots:
                shares[upload.id] = upload_slots
    return shares


def _divide(total: int, weights: list[int]) -> list[int]:
    """`total` split in proportion to `weights`, each at least 1 while there is one to give, the first ones
    taking the remainder; zeros once `total` runs out."""
    if total <= len(weights):
        return [1] * total + [0] * (len(weights) - total)
    rest = total - len(weights)
    parts = [1 + rest * w // sum(weights) for w in weights]
    for i in range(total - sum(parts)):
        parts[i % len(parts)] += 1
    return parts


class Turns:
    """The rows held and not started, and which to start next. Not thread-safe: its owner holds a lock.

    Two levels of heaps keep each choice at O(log n) however many uploads are held: tenants by
    rows started for their weight, and each tenant's uploads by rows started.
    """

    def __init__(self) -> None:
        self._tenants: dict[str, tuple[str, int]] = {}  # upload id -> (tenant, weight), as the ledger has them
        self._weights: dict[str, int] = {}
        self._held: dict[str, collections.deque[Delivery]] = {}  # upload id -> its rows, in delivery order
        self._tenant_of: dict[str, str] = {}  # of each upload held, as it was when its rows came
        self._started: dict[str, float] = collections.defaultdict(float)  # by tenant, divided by its weight
        self._by_upload: collections.Counter[str] = collections.Counter()
        self._tenant_heap: list[tuple[float, int, str]] = []  # (started, order, tenant) of each tenant held
        self._upload_heaps: dict[str, list[tuple[int, int, str]]] = {}  # tenant -> (started, order, upload)
        self._order = 0  # ties go to the first in
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def know(self, uploads: Iterable[OpenUpload]) -> None:
        """The tenants and weights of the uploads open now."""
        self._tenants = {u.id: (u.tenant, u.weight) for u in uploads}
        self._weights = dict(self._tenants.values())
        for upload in [u for u in self._by_upload if u not in self._tenants and u not in self._held]:
            del self._by_upload[upload]

    def add(self, delivery: Delivery) -> None:
        upload = upload_of(delivery.properties)
        held = self._held.get(upload)
        if held is None:
            held = self._held[upload] = collections.deque()
            self._hold(upload)
        held.append(delivery)
        self._count += 1

    def take(self) -> Delivery | None:
        """The next row to start, or None when none is held."""
        if not self._count:
            return None
        started, _, tenant = heapq.heappop(self._tenant_heap)
        uploads = self._upload_heaps[tenant]
        count, _, upload = heapq.heappop(uploads)
        held = self._held[upload]
        delivery = held.popleft()
        self._count -= 1
        self._by_upload[upload] = count + 1
        if held:
            heapq.heappush(uploads, (count + 1, self._next(), upload))
        else:
            del self._held[upload], self._tenant_of[upload]
        self._started[tenant] = started + 1 / self._weights.get(tenant, 1)
        if uploads:
            heapq.heappush(self._tenant_heap, (self._started[tenant], self._next(), tenant))
        else:
            del self._upload_heaps[tenant]
        return delivery

    def withdraw(self, uploads: set[str]) -> list[Delivery]:
        """Take out every held row of `uploads`, unstarted; return them."""
        gone = uploads & self._held.keys()
        if not gone:
            return []
        taken = [d for upload in gone for d in self._held.pop(upload)]
        self._count -= len(taken)
        for upload in gone:
            del self._tenant_of[upload]
        self._upload_heaps = {t: [e for e in heap if e[2] not in gone] for t, heap in self._upload_heaps.items()}
        self._upload_heaps = {t: heap for t, heap in self._upload_heaps.items() if heap}
        for heap in self._upload_heaps.values():
            heapq.heapify(heap)
        self._tenant_heap = [e for e in self._tenant_heap if e[2] in self._upload_heaps]
        heapq.heapify(self._tenant_heap)
        return taken

    def _hold(self, upload: str) -> None:
        """The first row held of `upload`: it, and its tenant if new, start level with the least started held."""
        tenant = self._tenant_of[upload] = self._tenants.get(upload, UNKNOWN)[0]
        uploads = self._upload_heaps.get(tenant)
        if uploads is None:
            uploads = self._upload_heaps[tenant] = []
            if self._tenant_heap:
                self._started[tenant] = max(self._started[tenant], self._tenant_heap[0][0])
            heapq.heappush(self._tenant_heap, (self._started[tenant], self._next(), tenant))
        if uploads:
            self._by_upload[upload] = max(self._by_upload[upload], uploads[0][0])
        heapq.heappush(uploads, (self._by_upload[upload], self._next(), upload))

    def _next(self) -> int:
        self._order += 1
        return self._order
