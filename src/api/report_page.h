// The report of a compressed model: per layer an SVG of the shared values and how many weights use
// each (above the source model's weight histogram when given) with its numbers as CSV, a JSON file
// (api/inspect.h) and one HTML page with the per-layer table and byte breakdown.
#pragma once

#include <string>
#include <vector>

#include "sparrow/status.h"

namespace sparrow::api {

struct ReportRequest {
  std::string model;   // the .spw
  std::string dir;     // where the files go (created); empty: MODEL.report
  std::string source;  // the uncompressed ONNX model, or empty
  int bins = 120;      // histogram bins of the source weights
  // `sparrow sensitivity --json` of the source model, or empty: with it the page plots each layer's
  // accuracy against its sparsity (pruned alone) beside the sparsity this file keeps.
  std::string sensitivity;
};

// The files written (paths under `directory`).
struct ReportFiles {
  std::string directory, page, json;

  std::vector<std::string> plots;
  std::vector<std::string> tables;  // beside each plot, its numbers as CSV (same name, .csv)
};

// Writes every file of the report, or none of them (each to a temporary name, renamed at the end).
Result<ReportFiles> write_report(const ReportRequest& request);

}  // namespace sparrow::api
