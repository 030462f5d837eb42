// Measuring models on data: accuracy against labels, outputs for a teacher, agreement between two
// models. All run on the dense executor in batches.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "sparrow/retrain.h"

namespace sparrow {

namespace {

constexpr int64_t kBatch = 500;

// Runs `model` on every row of `inputs` in batches; `row_outputs(begin, rows, output)` receives
// each batch's first output.
Status for_each_batch(const Model& model, const Tensor& inputs, int threads,
                      const std::function<Status(int64_t, int64_t, const Tensor&)>& row_outputs) {
  SP_ASSIGN_OR_RETURN(auto ex, Executor::create(model, ExecOptions{threads}));
  LabeledData all;
  all.inputs = Tensor::view(DType::f32, inputs.shape(), const_cast<float*>(inputs.f32_data()));
  const int64_t n = all.size();
  for (int64_t i = 0; i < n; i += kBatch) {
    LabeledData part = slice(all, i, std::min(n, i + kBatch));
    SP_ASSIGN_OR_RETURN(auto out, ex->run({&part.inputs, 1}));
    SP_RETURN_IF_ERROR(row_outputs(i, part.size(), *out[0]));
  }
  return {};
}

int64_t top1(const float* row, int64_t classes) {
  return std::max_element(row, row + classes) - row;
}

}  // namespace

Result<double> classification_accuracy(Model model, const LabeledData& data, int threads) {
  if (data.size() == 0) return 0.0;
  if (!data.labeled()) return errorf("accuracy needs labels; the data has none");
  int64_t correct = 0;
  SP_RETURN_IF_ERROR(
      for_each_batch(model, data.inputs, threads, [&](int64_t begin, int64_t rows, const Tensor& y) {
        const int64_t classes = y.numel() / std::max<int64_t>(rows, 1);
        for (int64_t k = 0; k < rows; ++k)
          correct += top1(y.f32_data() + k * classes, classes) == data.labels[begin + k];
        return Status();
      }));
  return data.size() ? static_cast<double>(correct) / static_cast<double>(data.size()) : 0.0;
}

Result<Tensor> model_outputs(const Model& model, const Tensor& inputs, int threads) {
  if (inputs.rank() < 1 || inputs.dim(0) == 0) return errorf("{}: no input rows to run", model.source);
  Tensor outputs;
  SP_RETURN_IF_ERROR(
      for_each_batch(model, inputs, threads, [&](int64_t begin, int64_t rows, const Tensor& y) {
        const int64_t per_row = y.numel() / std::max<int64_t>(rows, 1);
        if (begin == 0) outputs = Tensor(DType::f32, {inputs.dim(0), per_row});
        if (per_row != outputs.dim(1))
          return errorf("{}: output rows change size between batches", model.source);
        std::memcpy(outputs.f32_data() + begin * per_row, y.f32_data(), sizeof(float) * rows * per_row);
        return Status();
      }));
  return outputs;
}

Status add_teacher_outputs(const Model& teacher, LabeledData& data, int threads) {
  if (data.size() == 0) return {};
  SP_ASSIGN_OR_RETURN(data.teacher, model_outputs(teacher, data.inputs, threads));
  return {};
}

Result<Agreement> output_agreement(const Model& reference, const Model& other, const Tensor& inputs,
                                   int threads) {
  SP_ASSIGN_OR_RETURN(Tensor a, model_outputs(reference, inputs, threads));
  SP_ASSIGN_OR_RETURN(Tensor b, model_outputs(other, inputs, threads));
  if (a.shape() != b.shape())
    return errorf("{} and {}: outputs of shapes {} and {} cannot be compared", reference.source, other.source,
                  shape_str(a.shape()), shape_str(b.shape()));
  Agreement r;
  const int64_t rows = a.dim(0), classes = a.dim(1);
  int64_t same = 0;
  double sum = 0;
  for (int64_t k = 0; k < rows; ++k) {
    const float* x = a.f32_data() + k * classes;
    const float* y = b.f32_data() + k * classes;
    same += top1(x, classes) == top1(y, classes);
    for (int64_t c = 0; c < classes; ++c) {
      const double d = std::abs(static_cast<double>(x[c]) - y[c]);
      r.max_abs_difference = std::max(r.max_abs_difference, d);
      sum += d;
    }
  }
  r.top1 = rows ? static_cast<double>(same) / static_cast<double>(rows) : 0.0;
  r.mean_abs_difference = a.numel() ? sum / static_cast<double>(a.numel()) : 0.0;
  return r;
}

}  // namespace sparrow
