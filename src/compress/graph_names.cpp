#include "compress/graph_names.h"

namespace sparrow {

std::map<std::string, int> value_readers(const Model& model) {
  std::map<std::string, int> n;
  for (const Node& node : model.nodes)
    for (const std::string& in : node.inputs) ++n[in];
  return n;
}

std::set<std::string> names_in_use(const Model& model) {
  std::set<std::string> used;
  for (const auto& [name, t] : model.initializers) used.insert(name);
  for (const ValueInfo& v : model.inputs) used.insert(v.name);
  for (const Node& n : model.nodes) {
    used.insert(n.name);
    used.insert(n.outputs.begin(), n.outputs.end());
  }
  return used;
}

std::string claim_name(std::set<std::string>& used, const std::string& base) {
  std::string name = base;
  for (int k = 2; used.count(name); ++k) name = base + "_" + std::to_string(k);
  used.insert(name);
  return name;
}

}  // namespace sparrow
