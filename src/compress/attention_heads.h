// Attention heads as structured groups: whole heads removed from multi-head attention blocks.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "sparrow/compress.h"

namespace sparrow {

// Finds the model's multi-head attention blocks and removes the heads `rule` (or a projection's
// own rule in `per_layer`, by node or weight name) drops from each: a block's heads are one group,
// scored by the norms of their rows in the query, key and value projections and of their columns
// in the output projection (each part's norms over their mean, summed).
//
// A block is what exporters write for scaled dot-product attention: query, key and value each a
// MatMul or Gemm on a constant weight (three, or one fused projection whose output three Slices
// part), an optional constant bias Add, a Reshape that parts the channels into heads of equal
// width, Transposes and scalar scales; the scores as a MatMul of the query's and key's heads,
// through scalar scales and an optional mask Add (one that does not vary by head) into Softmax
// over the last axis; the Softmax (through Dropout, Identity or Cast) times the value's heads;
// Transposes and a Reshape that joins the heads into channels, read by a MatMul or Gemm on a
// constant weight (the output projection).
//
// The heads must stay on one batch axis of both products (Transposes followed by their perms), the
// Softmax must not run over it, a mask must be 1 on it, and the merge must find them just before
// their channels.
//
// Removing head h removes the query, key and value projections' rows of h and their bias entries,
// and the output projection's columns of h: the model then computes what the original does with
// h's value rows and bias entries zeroed. The Reshapes and Slices between the projections get
// constant shapes and bounds for the heads kept (0 for the dimensions copied from their input, -1
// for the one that holds the heads), and the nodes no output needs any more (the shape computations
// only they read) go. The shapes are learnt by running the model on zeros with every open input
// dimension 2, then 3; a model that cannot run so keeps every block whole (with a warning).
//
// A block stays whole, with the reason in its ChannelGroup, where a weight is shared with other
// nodes, where a value between the projections is read by anything else, where its shapes or axes
// are not those above, or where its rule says so. Blocks are reported in graph order, with
// `head_width` set; `--channel-multiple` does not apply to them (a head is already a block of
// channels).
Result<std::vector<ChannelGroup>> prune_attention_heads(
    Model& model, const StructuredRule& rule, const std::map<std::string, StructuredRule>& per_layer);

}  // namespace sparrow
