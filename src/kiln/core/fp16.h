// Scalar conversions between float32 and IEEE half (f16), bfloat16 and fp8
// e4m3. Bit-exact, round-to-nearest-even; used by the reference paths and by
// the quantizers, so they must not depend on compiler flags (no F16C here).
#pragma once

#include <cstdint>
#include <cstring>

namespace kiln {

inline uint32_t f32_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_f32(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float fp16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0) {
    if (mant == 0) return bits_f32(sign);
    // Subnormal: normalize.
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400) == 0);
    mant &= 0x3ff;
    return bits_f32(sign | uint32_t(127 - 15 - e) << 23 | mant << 13);
  }
  if (exp == 31) return bits_f32(sign | 0x7f800000u | mant << 13);  // inf / nan
  return bits_f32(sign | (exp + 127 - 15) << 23 | mant << 13);
}

inline uint16_t f32_to_fp16(float f) {
  const uint32_t x = f32_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {  // inf or nan (keep nan quiet and non-zero)
    return uint16_t(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 | ((ax >> 13) & 0x3ff) : 0));
  }
  if (ax >= 0x477ff000u) return uint16_t(sign | 0x7c00);  // rounds to >= 65520: inf
  if (ax < 0x38800000u) {                                // result subnormal or zero
    if (ax < 0x33000000u) return sign;                   // < 2^-25: rounds to 0
    const uint32_t e = ax >> 23;
    const uint32_t m = (ax & 0x7fffff) | 0x800000;
    // value = m * 2^(e-150); half subnormal unit = 2^-24 => q = m * 2^(e-126)
    const uint32_t sh = 126 - e;  // right shift amount, 1..24
    uint32_t q = m >> sh;
    const uint32_t rem = m & ((1u << sh) - 1);
    const uint32_t half = 1u << (sh - 1);
    if (rem > half || (rem == half && (q & 1))) ++q;
    return uint16_t(sign | q);
  }
  // Normal: rebias exponent, round mantissa 23 -> 10 bits (ties to even).
  uint32_t r = ax - 0x38000000u;  // exponent - 112
  const uint32_t rem = r & 0x1fff;
  r >>= 13;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) ++r;
  return uint16_t(sign | r);
}

inline float bf16_to_f32(uint16_t h) { return bits_f32(uint32_t(h) << 16); }

inline uint16_t f32_to_bf16(float f) {
  uint32_t x = f32_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return uint16_t((x >> 16) | 0x40);  // quiet nan
  x += 0x7fff + ((x >> 16) & 1);  // round to nearest even
  return uint16_t(x >> 16);
}

// fp8 e4m3 (OCP "e4m3fn"): bias 7, no infinities, 0x7f/0xff are NaN, max 448.
inline float fp8_e4m3_to_f32(uint8_t v) {
  const uint32_t sign = uint32_t(v & 0x80) << 24;
  const uint32_t exp = (v >> 3) & 0xf;
  const uint32_t mant = v & 0x7;
  if (exp == 0xf && mant == 0x7) return bits_f32(sign | 0x7fc00000u);
  if (exp == 0) {
    // subnormal: mant * 2^-9
    const float val = float(mant) * (1.0f / 512.0f);
    return sign ? -val : val;
  }
  return bits_f32(sign | (exp + 127 - 7) << 23 | mant << 20);
}

// Saturating conversion (values beyond 448 clamp to 448), as KV caches want.
inline uint8_t f32_to_fp8_e4m3(float f) {
  const uint32_t x = f32_bits(f);
  const uint8_t sign = uint8_t((x >> 24) & 0x80);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return uint8_t(sign | 0x7f);  // nan
  if (ax >= 0x43e00000u) return uint8_t(sign | 0x7e);  // >= 448 (incl. inf): saturate
  if (ax < 0x3c800000u) {                              // < 2^-6: subnormal range
    // q = round(|f| * 2^9), ties to even; q in [0, 8]
    const float af = bits_f32(ax) * 512.0f;
    uint32_t q = uint32_t(af);
    const float rem = af - float(q);
    if (rem > 0.5f || (rem == 0.5f && (q & 1))) ++q;
    return uint8_t(sign | q);  // q == 8 is exactly the smallest normal (0x08)
  }
  uint32_t r = ax - ((127u - 7u) << 23);
  const uint32_t rem = r & 0xfffff;
  r >>= 20;
  if (rem > 0x80000 || (rem == 0x80000 && (r & 1))) ++r;
  if (r > 0x7e) r = 0x7e;
  return uint8_t(sign | r);
}

}  // namespace kiln
