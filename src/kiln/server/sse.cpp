// SSE framing.
#include "kiln/server/sse.h"

namespace kiln::server {

std::string sse_data(std::string_view payload) {
  std::string out;
  size_t start = 0;
  while (true) {
    const size_t nl = payload.find('\n', start);
    out += "data: ";
    out.append(
        payload.substr(start, nl == std::string_view::npos ? std::string_view::npos : nl - start));
    out += '\n';
    if (nl == std::string_view::npos) break;
    start = nl + 1;
  }
  out += '\n';
  return out;
}

std::string sse_event(const nlohmann::ordered_json& j) {
  return sse_data(j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace));
}

}  // namespace kiln::server
