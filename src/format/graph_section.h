// The GRPH section of format 1.1: the graph in Sparrow's own encoding, read without protobuf.
// Format 1.0 stored it as an ONNX ModelProto; reading (and writing) that needs the ONNX library,
// which registers its codec here when it is linked (sparrow/onnx.h).
#pragma once

#include <string>
#include <string_view>

#include "sparrow/model.h"

namespace sparrow::spw {

// The graph without initializers. Layout (little-endian; a string is a u32 length then its bytes):
//   i64 opset, i64 ir_version; string producer_name, producer_version, graph_name;
//   u32 count, then (string key, string value) metadata pairs;
//   u32 count, then inputs; u32 count, then outputs. A value: string name, i32 elem_type,
//     u8 has_shape, u32 rank, then per dim i64 size (-1: unknown) and string symbol;
//   u32 count, then nodes. A node: string name, op_type, domain; u32 count, then input names;
//     u32 count, then output names; u32 count, then attributes. An attribute: string key, u8 kind
//     (0 int, 1 float, 2 string, 3 ints, 4 floats, 5 strings, 6 tensor), then its value: i64, f32,
//     string, or u32 count then that many i64 / f32 / strings; a tensor is u8 dtype (0 f32, 1 i64),
//     u8 rank, u64 dims[rank], then its elements.
std::string encode_graph(const Model& graph);
// Fully bounds-checked; errors name the node, attribute or field. Checks the opset range and that
// every node has an output and the default domain.
Result<Model> decode_graph(std::string_view bytes);

// The ONNX codec of format 1.0's GRPH section, registered by the ONNX library when it is linked.
struct OnnxGraphCodec {
  Result<Model> (*parse)(std::string_view bytes, const std::string& source) = nullptr;
  Result<std::string> (*serialize)(const Model& graph) = nullptr;
};
void register_onnx_graph_codec(OnnxGraphCodec codec);
const OnnxGraphCodec& onnx_graph_codec();

}  // namespace sparrow::spw
