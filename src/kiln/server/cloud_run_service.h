// The Cloud Run service definition `kiln plan --service-out` writes: GPU
// shapes Cloud Run offers (GUIDE §6) and a Knative serving.knative.dev/v1
// Service YAML carrying the capacity plan's numbers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kiln/core/status.h"

namespace kiln::server {

struct GpuShape {
  std::string_view name;         // --gpu value
  std::string_view accelerator;  // Cloud Run nodeSelector value; empty: not on Cloud Run
  uint64_t memory_bytes = 0;     // total device memory as the driver reports it
  int32_t min_cpu = 0;           // Cloud Run's minimum vCPU with this GPU
  int32_t min_memory_gib = 0;    // Cloud Run's minimum instance memory
  std::string_view note;
};

const GpuShape* find_gpu_shape(std::string_view name);
std::string gpu_shape_names();  // "l4, h100, rtx-pro-6000"

struct CloudRunServiceSpec {
  std::string name = "kiln";
  std::string image;
  const GpuShape* gpu = nullptr;
  int32_t container_concurrency = 0;
  int32_t min_instances = 0;
  int32_t max_instances = 3;
  int32_t port = 8080;
  int32_t request_timeout_s = 600;  // long generations stream for minutes
  double startup_seconds = 60;      // measured (or expected) exec-to-ready time
  bool startup_measured = false;
  std::vector<std::string> args;  // appended to the image's ENTRYPOINT
  // Cloud Storage variant: `command` replaces the ENTRYPOINT so that
  // --model names the bucket; Direct VPC egress routes all traffic (the
  // download included) through the VPC for Private Google Access.
  std::string model_url;
  std::string vpc_network;
  std::string vpc_subnet;
  std::string api_key_secret;  // Secret Manager secret for KILN_API_KEY
  std::string header;          // comment lines written at the top (without '#')
};

struct ProbeTiming {
  int32_t period_s = 0;
  int32_t failure_threshold = 0;
  int32_t window_s = 0;  // period x threshold: how long start-up may take
};
// Start-up probe timing: three times the expected start-up (at least a
// minute) so a slow image pull or page-cache miss doesn't kill a healthy
// instance, within Cloud Run's 1800 s limit for GPU services.
ProbeTiming startup_probe_timing(double startup_seconds);

Result<std::string> render_cloud_run_service(const CloudRunServiceSpec& spec);

}  // namespace kiln::server
