#include <cstring>

#include "sparrow/dataset.h"
#include "sparrow/train.h"

namespace sparrow {

Result<LabeledData> load_labeled_idx(const std::string& images, const std::string& labels,
                                     const Shape& sample_shape, float scale, float shift, int64_t limit) {
  SP_ASSIGN_OR_RETURN(Tensor raw, read_idx(images));
  SP_ASSIGN_OR_RETURN(std::vector<int64_t> y, read_idx_labels(labels));
  int64_t n = raw.dim(0);
  if (n != static_cast<int64_t>(y.size()))
    return errorf("{} has {} images but {} has {} labels", images, n, labels, y.size());
  if (limit > 0) n = std::min(n, limit);
  int64_t sample = raw.numel() / std::max<int64_t>(raw.dim(0), 1);
  if (shape_numel(sample_shape) != sample)
    return errorf("{}: images of {} values do not fit the input shape {}", images, sample,
                  shape_str(sample_shape));
  Shape shape = sample_shape;
  shape.insert(shape.begin(), n);
  LabeledData d;
  d.inputs = Tensor(DType::f32, shape);
  d.labels.assign(y.begin(), y.begin() + n);
  for (int64_t i = 0; i < n * sample; ++i) d.inputs.f32_data()[i] = raw.f32_data()[i] * scale + shift;
  for (int64_t label : d.labels)
    if (label < 0 || label > 1000000) return errorf("{}: label {} is out of range", labels, label);
  return d;
}

void keep_leading_rows(LabeledData& d, int64_t rows) {
  d.inputs.keep_leading(rows);
  if (d.labeled()) d.labels.resize(static_cast<size_t>(rows));
  if (d.teacher.rank() == 2) d.teacher.keep_leading(rows);
}

LabeledData slice(const LabeledData& d, int64_t begin, int64_t end) {
  Shape shape = d.inputs.shape();
  int64_t sample = d.inputs.numel() / std::max<int64_t>(shape[0], 1);
  shape[0] = end - begin;
  LabeledData out;
  out.inputs = Tensor(DType::f32, shape);
  std::memcpy(out.inputs.raw(), d.inputs.f32_data() + begin * sample, out.inputs.bytes());
  if (d.labeled()) out.labels.assign(d.labels.begin() + begin, d.labels.begin() + end);
  if (d.taught()) {
    const int64_t classes = d.teacher.dim(1);
    out.teacher = Tensor(DType::f32, {end - begin, classes});
    std::memcpy(out.teacher.raw(), d.teacher.f32_data() + begin * classes, out.teacher.bytes());
  }
  return out;
}

}  // namespace sparrow
