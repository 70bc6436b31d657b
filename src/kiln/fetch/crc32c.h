// CRC32C (Castagnoli), the checksum Cloud Storage keeps for every object:
// a portable slice-by-8 table path and the SSE4.2 crc32 instruction when the
// CPU has it (chosen at run time, so one binary runs anywhere).
#pragma once

#include <cstddef>
#include <cstdint>

namespace kiln::fetch {

// Extends `crc` (0 for a fresh stream) over `n` bytes; returns the CRC as GCS
// reports it (before big-endian base64 encoding).
uint32_t crc32c_update(uint32_t crc, const void* data, size_t n);

// The table path alone: the oracle the hardware path is tested against.
uint32_t crc32c_update_portable(uint32_t crc, const void* data, size_t n);

}  // namespace kiln::fetch
