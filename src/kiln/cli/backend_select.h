// Chooses the compute backend for the CLI commands: `--device cpu|cuda`,
// default cuda when kiln was built with the CUDA backend and a GPU is present,
// cpu otherwise. The only place above backend/ that names a concrete backend.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <functional>
#include <optional>
#include <span>
#include <string>

#include "kiln/backend/backend.h"
#include "kiln/backend/cpu/cpu_backend.h"

namespace kiln::model {
class Model;
}

namespace kiln::cli {

struct DeviceOptions {
  std::string device;  // "cpu", "cuda", or empty for default_device()
  cpu::CpuOptions cpu; // used when the CPU backend is chosen
  // GPU loading of baked weight images (cuda only): reader threads and
  // O_DIRECT reads (for files not in the page cache).
  int load_threads = 8;
  bool load_direct = false;
  // The model is a baked artifact on local disk: the CUDA backend prepares
  // the image loader's pinned buffers while its context is being created.
  bool expect_image = false;
};

// Adds --load-threads and --load-direct (GPU weight loading) to a subcommand.
void add_load_options(CLI::App* cmd, DeviceOptions& o);

// How the backend's last load_weights went, for the start-up breakdown:
// seconds spent streaming a baked weight image to the GPU and its bytes, or
// nothing when the backend did not load an image.
struct ImageLoadInfo {
  double seconds = 0;
  uint64_t bytes = 0;
  int threads = 0;
  double setup_seconds = 0;  // of `seconds`: staging buffers allocated
  // backend creation: the driver's start, the GPU context, the rest
  double driver_seconds = 0, context_seconds = 0, after_context_seconds = 0;
};
std::optional<ImageLoadInfo> image_load_info(const Backend& be);

// Hands a baked weight image's chunk checksums to a backend that verifies
// them while it streams the weights (CUDA), so the file is read once. False
// when the backend cannot: the caller must verify the body itself.
using ChunkVerifier = std::function<Status(uint64_t i, std::span<const uint8_t> bytes)>;
bool verify_image_while_loading(Backend& be, uint64_t offset, uint64_t body_bytes,
                                uint64_t chunk_bytes, ChunkVerifier verify);
// Whether the backend `--device` names (empty: the default) may be one that
// verifies while it streams, known before it exists: false for the CPU and
// for a kiln built without CUDA, where chunks checked early would only be
// checked again.
bool may_verify_image_while_loading(const std::string& device);

bool cuda_built();           // kiln was compiled with the CUDA backend
std::string default_device(); // "cuda" when built with CUDA and a GPU is present, else "cpu"

// Adds `--device cpu|cuda` to a subcommand.
void add_device_option(CLI::App* cmd, std::string& device);

// Creates the chosen backend (weights not loaded yet). Errors say what is
// missing (no GPU, kiln built without CUDA) and suggest --device cpu.
Result<std::unique_ptr<Backend>> make_backend(const DeviceOptions& o);

// What `kiln generate` and `kiln bench` share: the backend chosen by
// --device, the model's weights loaded, and a KV pool for one sequence of
// n_positions positions (blocks of 16), in --kv-type or the backend default.
struct SingleSequenceSetup {
  std::string device;
  cpu::CpuOptions cpu;
  std::string kv_type;  // empty: default_kv_type()
  int64_t n_positions = 0;
};
Result<std::unique_ptr<Backend>> open_single_sequence_backend(const model::Model& model,
                                                              const SingleSequenceSetup& s);

// Re-sizes the KV pool of an opened backend (same type) for n_seqs sequences
// of positions_per_seq positions each, every sequence with its own blocks:
// what `kiln bench --streams` uses between stream counts. The error says how
// much was asked for and what to try when the pool does not fit.
Status resize_kv_for_sequences(Backend& backend, int64_t n_seqs, int64_t positions_per_seq);

// KV element type a backend uses unless --kv-type says otherwise: f16, or
// f32 on the CPU reference path (to match a float64 forward).
KvType default_kv_type(const Backend& be);

// The CPU backend behind `be`, or nullptr (for CPU-only report fields).
const cpu::CpuBackend* as_cpu(const Backend& be);

// Memory bandwidth that decode figures are compared with, bytes/s: the
// measured device-to-device copy rate for GPUs it is known for (H100 80GB
// HBM3: 3.0 TB/s, GUIDE §5), else the device's theoretical peak; 0 on the CPU.
double reference_bandwidth(const Backend& be);

}  // namespace kiln::cli
