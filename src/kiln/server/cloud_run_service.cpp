// Cloud Run GPU shapes and the service YAML writer.
#include "kiln/server/cloud_run_service.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>

namespace kiln::server {
namespace {

// Memory totals are what the driver reports (nvidia-smi's MiB), not the
// marketing figure: the plan budgets from the same number kiln serve reads
// at start-up. Minimum CPU/memory per GPU: Cloud Run's GPU documentation.
constexpr std::array<GpuShape, 3> kGpus = {{
    {"l4", "nvidia-l4", 23034ull << 20, 4, 16,
     "NVIDIA L4 24 GB, sm_89, driver 535 (CUDA 12.2): images built with CUDA 12.x"},
    {"rtx-pro-6000", "nvidia-rtx-pro-6000", 97887ull << 20, 20, 80,
     "NVIDIA RTX PRO 6000 Blackwell 96 GB, sm_120, driver 580 (CUDA 13)"},
    {"h100", "", 81559ull << 20, 0, 0,
     "NVIDIA H100 80GB HBM3, sm_90a: not offered by Cloud Run (plan only)"},
}};

// YAML double-quoted scalar: JSON escaping is a subset YAML accepts.
std::string q(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

const GpuShape* find_gpu_shape(std::string_view name) {
  for (const auto& g : kGpus)
    if (g.name == name) return &g;
  return nullptr;
}

std::string gpu_shape_names() {
  std::string s;
  for (const auto& g : kGpus) s += (s.empty() ? "" : ", ") + std::string(g.name);
  return s;
}

ProbeTiming startup_probe_timing(double startup_seconds) {
  ProbeTiming t;
  t.period_s = 2;  // readiness is noticed within 2 s of the model being able to serve
  const double want = std::clamp(3.0 * std::max(0.0, startup_seconds), 60.0, 1800.0);
  t.failure_threshold = int32_t(std::ceil(want / t.period_s));
  t.window_s = t.period_s * t.failure_threshold;
  return t;
}

Result<std::string> render_cloud_run_service(const CloudRunServiceSpec& s) {
  if (!s.gpu) return make_error("service: no GPU shape");
  if (s.gpu->accelerator.empty())
    return make_error(fmt::format(
        "--gpu {}: Cloud Run does not offer this GPU; write a service for l4 or rtx-pro-6000",
        s.gpu->name));
  if (s.container_concurrency < 1 || s.container_concurrency > 1000)
    return make_error(fmt::format("service: containerConcurrency {} is outside Cloud Run's 1..1000",
                                  s.container_concurrency));
  if (s.image.empty()) return make_error("service: --image is required");
  if (s.min_instances < 0 || s.max_instances < 1 || s.min_instances > s.max_instances)
    return make_error("service: need 0 <= --min-instances <= --max-instances, max >= 1");
  const bool from_gcs = !s.model_url.empty();
  if (from_gcs && (s.vpc_network.empty() || s.vpc_subnet.empty()))
    return make_error(
        "service: --model-url needs --vpc-network and --vpc-subnet (Direct VPC egress, so the "
        "download goes through Private Google Access)");

  const ProbeTiming probe = startup_probe_timing(s.startup_seconds);
  std::string y;
  auto line = [&y](int indent, const std::string& text) {
    y.append(size_t(indent), ' ');
    y += text;
    y += '\n';
  };
  for (size_t b = 0, e; b < s.header.size(); b = e + 1) {
    e = s.header.find('\n', b);
    if (e == std::string::npos) e = s.header.size();
    std::string comment = "#";
    if (e > b) comment.append(" ").append(s.header, b, e - b);
    line(0, comment);
  }
  line(0, "apiVersion: serving.knative.dev/v1");
  line(0, "kind: Service");
  line(0, "metadata:");
  line(2, "name: " + q(s.name));
  line(0, "spec:");
  line(2, "template:");
  line(4, "metadata:");
  line(6, "annotations:");
  line(8, fmt::format("autoscaling.knative.dev/minScale: {}", q(std::to_string(s.min_instances))));
  line(8, fmt::format("autoscaling.knative.dev/maxScale: {}", q(std::to_string(s.max_instances))));
  // Instance-based billing: the engine thread decodes between requests and
  // drains after SIGTERM, which needs CPU outside request handling.
  line(8, "run.googleapis.com/cpu-throttling: \"false\"");
  line(8, "run.googleapis.com/startup-cpu-boost: \"true\"");
  // Zonal redundancy reserves GPU capacity in other zones at a higher price;
  // a stateless inference service can be re-created elsewhere instead.
  line(8, "run.googleapis.com/gpu-zonal-redundancy-disabled: \"true\"");
  if (from_gcs) {
    line(8, "run.googleapis.com/network-interfaces: " +
                q(fmt::format(R"([{{"network":"{}","subnetwork":"{}"}}])", s.vpc_network,
                              s.vpc_subnet)));
    line(8, "run.googleapis.com/vpc-access-egress: all-traffic");
  }
  line(4, "spec:");
  line(6, fmt::format("containerConcurrency: {}", s.container_concurrency));
  line(6, fmt::format("timeoutSeconds: {}", s.request_timeout_s));
  line(6, "nodeSelector:");
  line(8, "run.googleapis.com/accelerator: " + std::string(s.gpu->accelerator));
  line(6, "containers:");
  line(6, "- name: kiln");
  line(8, "image: " + q(s.image));
  if (from_gcs) {
    line(8, "command:");
    for (const char* a : {"kiln", "serve", "--model"}) line(8, "- " + q(a));
    line(8, "- " + q(s.model_url));
  }
  if (!s.args.empty()) {
    line(8, "args:");
    for (const auto& a : s.args) line(8, "- " + q(a));
  }
  line(8, "ports:");
  line(8, "- name: http1");
  line(10, fmt::format("containerPort: {}", s.port));
  if (!s.api_key_secret.empty()) {
    line(8, "env:");
    line(8, "- name: KILN_API_KEY");
    line(10, "valueFrom:");
    line(12, "secretKeyRef:");
    line(14, "name: " + q(s.api_key_secret));
    line(14, "key: latest");
  }
  line(8, "resources:");
  line(10, "limits:");
  line(12, fmt::format("cpu: {}", q(std::to_string(s.gpu->min_cpu))));
  line(12, fmt::format("memory: {}", q(fmt::format("{}Gi", s.gpu->min_memory_gib))));
  line(12, "nvidia.com/gpu: \"1\"");
  line(8, "startupProbe:");
  line(10, "httpGet:");
  line(12, "path: /health/ready");
  line(12, fmt::format("port: {}", s.port));
  line(10, "initialDelaySeconds: 0");
  line(10, fmt::format("periodSeconds: {}", probe.period_s));
  line(10, "timeoutSeconds: 1");
  line(10, fmt::format("failureThreshold: {}", probe.failure_threshold));
  line(8, "livenessProbe:");
  line(10, "httpGet:");
  line(12, "path: /health/live");
  line(12, fmt::format("port: {}", s.port));
  line(10, "periodSeconds: 10");
  line(10, "timeoutSeconds: 2");
  line(10, "failureThreshold: 3");
  line(2, "traffic:");
  line(2, "- percent: 100");
  line(4, "latestRevision: true");
  return y;
}

}  // namespace kiln::server
