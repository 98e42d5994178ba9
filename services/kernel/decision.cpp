#include "services/kernel/decision.h"

namespace wpm::kernel {

const char* rejection_code_name(RejectionCode code) {
  switch (code) {
    case RejectionCode::kInvalid: return "invalid";
    case RejectionCode::kNotFound: return "not_found";
    case RejectionCode::kConflict: return "conflict";
    case RejectionCode::kAlreadyExists: return "already_exists";
    case RejectionCode::kForbidden: return "forbidden";
    case RejectionCode::kExpired: return "expired";
    case RejectionCode::kUnauthenticated: return "unauthenticated";
  }
  return "unknown";
}

}  // namespace wpm::kernel
