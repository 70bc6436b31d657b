// OpenAI-style error objects: {"error": {"message", "type", "param", "code"}}.
// Every 4xx/5xx the edge sends carries one, so clients (the official SDKs
// raise typed exceptions from it) always see which field or limit was at fault.
#pragma once

#include <string>

#include "kiln/server/http_types.h"

namespace kiln::server {

struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending request field; "" -> null
  std::string code;   // "" -> null
};

// 400 naming the field.
inline ApiError bad_field(std::string param, std::string message) {
  return ApiError{400, std::move(message), "invalid_request_error", std::move(param), ""};
}

// The JSON body of an error.
std::string error_body(const ApiError& e);
HttpResponse error_response(const ApiError& e);

}  // namespace kiln::server
