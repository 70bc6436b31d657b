// Response-cache metrics as scrape-time callbacks over the cache counters.
#include "kiln/server/cache_metrics.h"

#include "kiln/cache/response_cache.h"
#include "kiln/server/metrics.h"

namespace kiln::server {

namespace {

void per_cache(MetricsRegistry& reg, const char* label, const cache::CacheCounters& c) {
  const std::string l = std::string("cache=\"") + label + "\"";
  auto read = [](const std::atomic<uint64_t>& a) { return [&a] { return double(a.load()); }; };
  reg.callback("kiln_response_cache_hits_total", "Requests answered from the response cache",
               "counter", read(c.hits), l);
  reg.callback("kiln_response_cache_misses_total",
               "Cache-eligible requests the response cache could not answer", "counter",
               read(c.misses), l);
  reg.callback("kiln_response_cache_guard_rejections_total",
               "Semantic candidates above the threshold refused by the false-hit guard", "counter",
               read(c.guard_rejections), l);
  reg.callback("kiln_response_cache_evictions_total",
               "Entries pushed out by --cache-max-entries / --cache-max-bytes", "counter",
               read(c.evictions), l);
  reg.callback("kiln_response_cache_expirations_total", "Entries dropped at --cache-ttl", "counter",
               read(c.expirations), l);
  reg.callback("kiln_response_cache_inserts_total",
               "Entries stored (answered here, from other instances, seeded or loaded)", "counter",
               read(c.inserts), l);
  reg.callback("kiln_response_cache_entries", "Entries held now", "gauge", read(c.entries), l);
  reg.callback("kiln_response_cache_bytes", "Bytes held now", "gauge", read(c.bytes), l);
}

}  // namespace

void register_cache_metrics(MetricsRegistry& reg, const cache::ResponseCache& cache) {
  if (cache.exact()) per_cache(reg, "exact", cache.exact()->counters());
  if (cache.semantic()) per_cache(reg, "semantic", cache.semantic()->counters());
  const cache::RedisSync* r = cache.redis();
  if (!r) return;
  const auto& c = r->counters();
  reg.callback("kiln_response_cache_redis_connected", "1 while the --cache-redis link is up",
               "gauge", [&c] { return double(c.connected.load()); });
  reg.callback("kiln_response_cache_redis_published_total", "Entries written to Redis", "counter",
               [&c] { return double(c.published.load()); });
  reg.callback("kiln_response_cache_redis_received_total",
               "Entries received from Redis (other instances, or loaded at connect)", "counter",
               [&c] { return double(c.applied.load()); });
  reg.callback("kiln_response_cache_redis_dropped_total",
               "Entries not written because Redis stayed away and the queue was full", "counter",
               [&c] { return double(c.dropped.load()); });
  reg.callback("kiln_response_cache_redis_errors_total", "Failed Redis connects or commands",
               "counter", [&c] { return double(c.errors.load()); });
}

}  // namespace kiln::server
