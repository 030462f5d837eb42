// Helpers for passes that rewrite a model's graph: who reads each value, and fresh names.
#pragma once

#include <map>
#include <set>
#include <string>

#include "sparrow/model.h"

namespace sparrow {

// How many node inputs read each value (a node reading a value twice counts twice).
std::map<std::string, int> value_readers(const Model& model);

// Every name in use: values, initializers, graph inputs and node names.
std::set<std::string> names_in_use(const Model& model);

// `base`, or base_2, base_3... whichever is not in `used` yet; it is then.
std::string claim_name(std::set<std::string>& used, const std::string& base);

}  // namespace sparrow
