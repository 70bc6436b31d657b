// /metrics series of the response caches (read at scrape time from the
// caches' own counters): hits, misses, guard rejections, evictions,
// expirations, size, and the Redis link.
#pragma once

namespace kiln::cache {
class ResponseCache;
}

namespace kiln::server {

class MetricsRegistry;

// `cache` must outlive the registry's renders.
void register_cache_metrics(MetricsRegistry& reg, const cache::ResponseCache& cache);

}  // namespace kiln::server
