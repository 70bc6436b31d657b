// CPU paged KV cache storage and row conversions (see kv_cache.h).
#include "kiln/backend/cpu/kv_cache.h"

#include <fmt/format.h>

#include <cstring>
#include <new>

#include "kiln/core/fp16.h"
#include "kiln/model/hparams.h"
#include "kiln/quant/quant.h"

namespace kiln::cpu {

void kv_store_row(KvType t, const float* src, uint8_t* dst, int64_t n) {
  switch (t) {
    case KvType::f32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case KvType::f16: {
      uint16_t* d = reinterpret_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) d[i] = f32_to_fp16(src[i]);
      return;
    }
    case KvType::fp8:
      // Unscaled e4m3: |values| beyond 448 saturate. Per-head scales (as
      // vLLM keeps) would widen the range; until then f16 is the safe choice.
      for (int64_t i = 0; i < n; ++i) dst[i] = f32_to_fp8_e4m3(src[i]);
      return;
    case KvType::q8_0:
      quant::quantize_row(DType::Q8_0, src, dst, n);
      return;
  }
}

void kv_load_row(KvType t, const uint8_t* src, float* dst, int64_t n) {
  switch (t) {
    case KvType::f32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case KvType::f16: {
      const uint16_t* s = reinterpret_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(s[i]);
      return;
    }
    case KvType::fp8:
      for (int64_t i = 0; i < n; ++i) dst[i] = fp8_e4m3_to_f32(src[i]);
      return;
    case KvType::q8_0:
      quant::dequantize_row(DType::Q8_0, src, dst, n);
      return;
  }
}

Status KvCache::init(const model::HParams& hp, const KvCacheConfig& cfg) {
  KILN_TRY(check_kv_config(hp, cfg));
  cfg_ = cfg;
  n_layer_ = hp.n_layer;
  k_row_ = kv_row_bytes(cfg.type, hp.head_dim_k);
  v_row_ = kv_row_bytes(cfg.type, hp.head_dim_v);
  k_head_stride_ = k_row_ * size_t(cfg.block_size);
  v_head_stride_ = v_row_ * size_t(cfg.block_size);
  k_block_stride_ = k_head_stride_ * size_t(hp.n_head_kv);
  v_block_stride_ = v_head_stride_ * size_t(hp.n_head_kv);
  v_offset_ = k_block_stride_ * size_t(cfg.n_blocks);
  layer_stride_ = v_offset_ + v_block_stride_ * size_t(cfg.n_blocks);
  total_bytes_ = uint64_t(layer_stride_) * uint64_t(n_layer_);
  data_.reset();
  data_.reset(new (std::nothrow) uint8_t[total_bytes_]);
  if (!data_)
    return make_error(
        fmt::format("KV cache: cannot allocate {:.1f} MiB for {} blocks of {} "
                    "positions; use fewer blocks",
                    double(total_bytes_) / (1 << 20), cfg.n_blocks, cfg.block_size));
  return Status::success();
}

void KvCache::copy_block(int32_t src, int32_t dst) {
  for (int64_t l = 0; l < n_layer_; ++l) {
    std::memcpy(k_head(l, dst, 0), k_head(l, src, 0), k_block_stride_);
    std::memcpy(v_head(l, dst, 0), v_head(l, src, 0), v_block_stride_);
  }
}

void KvCache::read_block(int32_t block, uint8_t* out) const {
  for (int64_t l = 0; l < n_layer_; ++l) {
    std::memcpy(out, k_head(l, block, 0), k_block_stride_);
    out += k_block_stride_;
    std::memcpy(out, v_head(l, block, 0), v_block_stride_);
    out += v_block_stride_;
  }
}

void KvCache::write_block(int32_t block, const uint8_t* in) {
  for (int64_t l = 0; l < n_layer_; ++l) {
    std::memcpy(k_head(l, block, 0), in, k_block_stride_);
    in += k_block_stride_;
    std::memcpy(v_head(l, block, 0), in, v_block_stride_);
    in += v_block_stride_;
  }
}

}  // namespace kiln::cpu
