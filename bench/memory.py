"""Memory: the producer's peak RSS while it takes a 100 MB and a 1 GB CSV."""

import threading

from bench import support
from tests.helpers.producer import producer, upload

MB = 1024 * 1024


def _peak_rss_mb(size_bytes: int) -> float:
    path = support.sample_csv_of_size(size_bytes)
    queue = "bench-memory"
    support.broker.delete_queue(queue)
    stop = threading.Event()
    # Keep the broker lean: a consumer throws the rows away as they arrive.
    drainer = threading.Thread(target=support.discard, args=(support.broker, queue, stop), daemon=True)
    with producer(queue) as (url, pid), support.PeakRss(pid) as rss:
        drainer.start()
        upload(url, path)
    stop.set()
    drainer.join()
    support.broker.delete_queue(queue)
    return round(rss.peak / MB, 1)


def run() -> dict[str, float]:
    return {
        "producer_peak_rss_mb_100mb": _peak_rss_mb(100 * MB),
        "producer_peak_rss_mb_1gb": _peak_rss_mb(1024 * MB),
    }
