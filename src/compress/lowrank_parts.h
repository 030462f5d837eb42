// What the low-rank factorizations of fully connected layers (lowrank.cpp) and of convolutions
// (lowrank_conv.cpp) share.
#pragma once

#include <Eigen/Core>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "sparrow/compress.h"

namespace sparrow::lowrank {

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// A float32 tensor of `shape` holding `m`'s entries in row-major order (m.size() == numel).
Tensor tensor_of(const RowMajor& m, const Shape& shape);

// The leading left singular vectors and the singular values of `m` (descending).
struct LeftSvd {
  Eigen::MatrixXf u;
  Eigen::VectorXd s;
};
LeftSvd left_svd(const RowMajor& m);

// One Conv (group 1, more than one tap, weight `weight` read by it only) replaced by the nodes the
// rule's method gives, appended to `nodes` with their weights added to `model`; nullopt (nothing
// appended) where the factors would hold as many weights as the layer. See factorize_low_rank.
Result<std::optional<FactorizedLayer>> factorize_conv(Model& model, const Node& node,
                                                      const std::string& weight, const LowRankRule& rule,
                                                      std::set<std::string>& used, std::vector<Node>& nodes);

}  // namespace sparrow::lowrank
